//! `--rate N`: at most N keys per second over the whole job, shared by all
//! reader threads (one per cluster node).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A shared pacing clock. Cloning shares the budget.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    inner: Option<Arc<Mutex<Pace>>>,
}

#[derive(Debug)]
struct Pace {
    keys_per_second: u64,
    started: Instant,
    keys: u64,
}

impl RateLimiter {
    /// `None` means unlimited.
    pub fn new(keys_per_second: Option<u64>) -> RateLimiter {
        RateLimiter {
            inner: keys_per_second
                .filter(|rate| *rate > 0)
                .map(|keys_per_second| {
                    Arc::new(Mutex::new(Pace {
                        keys_per_second,
                        started: Instant::now(),
                        keys: 0,
                    }))
                }),
        }
    }

    /// Blocks until `keys` more keys fit in the budget.
    pub fn acquire(&self, keys: usize) {
        let Some(inner) = &self.inner else { return };
        let wait = {
            let mut pace = inner
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            pace.keys += keys as u64;
            let due = Duration::from_secs_f64(pace.keys as f64 / pace.keys_per_second as f64);
            due.saturating_sub(pace.started.elapsed())
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_waits_and_limited_paces() {
        let unlimited = RateLimiter::new(None);
        let started = Instant::now();
        unlimited.acquire(1_000_000);
        assert!(started.elapsed() < Duration::from_millis(50));

        // 200 keys at 1000 keys/s cannot finish before 0.2 s.
        let limited = RateLimiter::new(Some(1000));
        let started = Instant::now();
        for _ in 0..4 {
            limited.acquire(50);
        }
        assert!(started.elapsed() >= Duration::from_millis(190));
    }
}
