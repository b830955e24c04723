//! An application doing dual writes while redis-ferry copies: every change
//! goes to the source first, then the same change to the target, as the
//! README's zero-downtime procedure asks.
//!
//! It works on a hot set of keys of four kinds (strings, counters, hashes,
//! lists), with changes that are not idempotent (INCR, RPUSH, LPOP, HDEL),
//! deletes and re-creations, and TTLs set and removed, so a stale write or
//! a resurrected key on the target shows up as a difference.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::ConnectionLike;

/// The hot keys' names: `hot:<kind>:<n>`.
pub fn hot_key(index: usize) -> String {
    let kind = ["s", "c", "h", "l"][index % 4];
    format!("hot:{kind}:{index}")
}

/// Writes the hot keys' first values (to the source only: the application
/// starts its dual writes against an empty target).
pub fn fill_hot_keys(connection: &mut dyn ConnectionLike, count: usize) {
    for index in 0..count {
        let key = hot_key(index);
        let command = match index % 4 {
            0 => redis::cmd("SET").arg(&key).arg("first").clone(),
            1 => redis::cmd("SET").arg(&key).arg(100).clone(),
            2 => redis::cmd("HSET").arg(&key).arg("f0").arg("v0").clone(),
            _ => redis::cmd("RPUSH").arg(&key).arg("a").arg("b").clone(),
        };
        command.exec(connection).expect("fill hot key");
    }
}

/// One change of a hot key, as the commands the application sends. With
/// `moves`, some changes rename a key, move it to db 1 and back, or give it
/// a TTL so short it expires at once (`--follow` must follow those).
fn change(index: usize, step: u64, moves: bool) -> Vec<redis::Cmd> {
    let key = hot_key(index);
    let value = format!("v{step}");
    let choice = step % 10;
    let mut commands = Vec::new();
    let mut add = |command: &mut redis::Cmd| commands.push(command.clone());
    if moves && step % 7 == 3 {
        let other = format!("{key}:renamed");
        match step % 4 {
            0 => add(redis::cmd("RENAME").arg(&key).arg(&other)),
            1 => add(redis::cmd("RENAME").arg(&other).arg(&key)),
            2 => add(redis::cmd("MOVE").arg(&key).arg(1)),
            _ => add(redis::cmd("SET").arg(&key).arg(&value).arg("PX").arg(20)),
        }
        return commands;
    }
    match choice {
        // Deleted, and (on a later change) created again.
        7 => add(redis::cmd("DEL").arg(&key)),
        8 => add(redis::cmd("PEXPIRE").arg(&key).arg(300_000)),
        9 => add(redis::cmd("PERSIST").arg(&key)),
        _ => match index % 4 {
            0 if choice < 5 => add(redis::cmd("SET").arg(&key).arg(&value)),
            0 => add(redis::cmd("SET")
                .arg(&key)
                .arg(&value)
                .arg("PX")
                .arg(200_000)),
            1 if choice < 5 => add(redis::cmd("INCR").arg(&key)),
            1 => add(redis::cmd("INCRBY").arg(&key).arg(7)),
            2 if choice < 5 => add(redis::cmd("HSET")
                .arg(&key)
                .arg(format!("f{}", step % 7))
                .arg(&value)),
            2 => add(redis::cmd("HDEL").arg(&key).arg(format!("f{}", step % 7))),
            _ if choice < 5 => {
                add(redis::cmd("RPUSH").arg(&key).arg(&value));
                add(redis::cmd("LTRIM").arg(&key).arg(-20).arg(-1));
            }
            _ => add(redis::cmd("LPOP").arg(&key)),
        },
    }
    commands
}

/// A running application thread; stop it with [`DualWriter::stop`].
pub struct DualWriter {
    stop: Arc<AtomicBool>,
    changes: Arc<AtomicU64>,
    longest_gap_us: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl DualWriter {
    /// Starts writing `hot` keys at about `per_second` changes per second
    /// (each change to `source`, then to `target`).
    pub fn start(
        source: Box<dyn ConnectionLike + Send>,
        target: Box<dyn ConnectionLike + Send>,
        hot: usize,
        per_second: u64,
    ) -> DualWriter {
        DualWriter::spawn(source, Some(target), hot, per_second)
    }

    /// An application that writes the source only (the target follows it
    /// through `--follow`), renaming, moving and expiring keys too.
    pub fn source_only(
        source: Box<dyn ConnectionLike + Send>,
        hot: usize,
        per_second: u64,
    ) -> DualWriter {
        DualWriter::spawn(source, None, hot, per_second)
    }

    fn spawn(
        mut source: Box<dyn ConnectionLike + Send>,
        mut target: Option<Box<dyn ConnectionLike + Send>>,
        hot: usize,
        per_second: u64,
    ) -> DualWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let changes = Arc::new(AtomicU64::new(0));
        let longest_gap_us = Arc::new(AtomicU64::new(0));
        let thread = {
            let stop = Arc::clone(&stop);
            let changes = Arc::clone(&changes);
            let longest_gap_us = Arc::clone(&longest_gap_us);
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
                let mut step: u64 = 0;
                while !stop.load(Ordering::SeqCst) {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let index = (state % hot as u64) as usize;
                    step += 1;
                    let moves = target.is_none();
                    for command in change(index, step, moves) {
                        let done = command.exec(&mut *source);
                        // A RENAME or MOVE of a key that is not there fails;
                        // an application would shrug.
                        if !moves {
                            done.expect("the application's write to the source");
                        }
                        let answered = Instant::now();
                        if let Some(target) = target.as_mut() {
                            command
                                .exec(&mut **target)
                                .expect("the application's write to the target");
                            let gap = answered.elapsed().as_micros() as u64;
                            longest_gap_us.fetch_max(gap, Ordering::SeqCst);
                        }
                    }
                    changes.fetch_add(1, Ordering::SeqCst);
                    // Pace: no faster than `per_second` on average.
                    let due = Duration::from_secs_f64(step as f64 / per_second as f64);
                    if let Some(ahead) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(ahead);
                    }
                }
            })
        };
        DualWriter {
            stop,
            changes,
            longest_gap_us,
            thread: Some(thread),
        }
    }

    /// Changes made so far.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    /// The longest time between a change's write to the source being
    /// answered and its write to the target being answered, in
    /// milliseconds: the fence holds each batch open `--fence-hold` for a
    /// lag up to that (see the README).
    pub fn longest_gap_ms(&self) -> f64 {
        self.longest_gap_us.load(Ordering::SeqCst) as f64 / 1000.0
    }

    /// Waits until at least `count` changes were made.
    pub fn wait_for_changes(&self, count: u64) {
        super::wait_until(
            &format!("{count} dual writes"),
            Duration::from_secs(60),
            || self.changes() >= count || self.thread.as_ref().is_some_and(|t| t.is_finished()),
        );
        assert!(self.changes() >= count, "the dual writer stopped early");
    }

    /// Stops the application and waits for its last change to be on both
    /// servers. Panics if the writer failed.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the dual writer ran without errors");
        }
        self.changes()
    }
}

impl Drop for DualWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
