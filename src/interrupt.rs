//! Ctrl-C and SIGTERM: a first signal asks the job to stop at the next batch
//! boundary; a second one exits at once.
//!
//! The library never installs a signal handler itself: it takes a
//! [`Shutdown`] flag, so tests and examples can trigger a stop without
//! signals. Only the binary calls [`install_handler`]. Exiting at once on the
//! second signal is safe because every batch is one SQLite transaction: the
//! journal holds either all of a batch or none of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::{Context, Result};

/// A shared "please stop" flag, cheap to clone into every stage.
#[derive(Clone, Default, Debug)]
pub struct Shutdown {
    requested: Arc<AtomicBool>,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every stage holding this flag to stop after its current batch.
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
    }

    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}

/// Installs the Ctrl-C / SIGTERM handler for the process: the first signal
/// sets `shutdown`, the second exits with 130 immediately.
pub fn install_handler(shutdown: &Shutdown) -> Result<()> {
    let shutdown = shutdown.clone();
    let presses = AtomicUsize::new(0);
    ctrlc::set_handler(move || {
        if presses.fetch_add(1, Ordering::SeqCst) == 0 {
            shutdown.request();
            crate::log::info(
                "stopping after the current batch (press Ctrl-C again to exit at once)",
            );
        } else {
            crate::log::info("exiting now; the journal is consistent, `resume` continues");
            std::process::exit(130);
        }
    })
    .context("cannot install the Ctrl-C handler")
}
