//! Gaps: moments when following may have missed changes (a subscription
//! that broke, a queue that overflowed, a primary subscribed late, the job
//! not running at all), or saw a flush it cannot replay key by key. Each
//! is recorded, said in the log, and closed by a catch-up pass.

use std::sync::Mutex;

use crate::clock::now_ms;

/// What a gap calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GapKind {
    /// A database was flushed on the source: the target still has keys the
    /// source lost; only those need finding.
    Flush,
    /// Changes may be lost: compare everything.
    Lost,
}

impl GapKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GapKind::Flush => "flush",
            GapKind::Lost => "lost changes",
        }
    }
}

/// One gap, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub kind: GapKind,
    pub reason: String,
    /// Unix milliseconds.
    pub at: i64,
}

/// Gaps noticed and not caught up yet, shared by every reader thread.
#[derive(Debug, Default)]
pub struct Gaps {
    open: Mutex<Vec<Gap>>,
}

impl Gaps {
    /// Records a gap and says so.
    pub fn record(&self, kind: GapKind, reason: String) {
        crate::log::warn(format!(
            "following: {reason}; a catch-up pass compares the servers and copies what differs"
        ));
        self.lock().push(Gap {
            kind,
            reason,
            at: now_ms(),
        });
    }

    /// Whether a gap waits for its catch-up.
    pub fn any(&self) -> bool {
        !self.lock().is_empty()
    }

    /// The gaps that wait, emptying the list.
    pub fn take(&self) -> Vec<Gap> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Gap>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
