//! Progress on stderr while a job runs: a bar with rate and ETA on a
//! terminal, a plain line every few seconds otherwise (a log file, a CI
//! job, `nohup`), or nothing with `--progress off`. stdout stays for data.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::clock::short_duration;
use crate::outcome::{KeyResult, OutcomeCounts};

/// `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum ProgressMode {
    /// A bar on a terminal, log lines otherwise.
    #[default]
    Auto,
    Bar,
    Log,
    Off,
}

const LOG_INTERVAL: Duration = Duration::from_secs(10);

enum Display {
    Bar(ProgressBar),
    Log { last: Instant },
    Off,
}

/// Counts keys as batches are journaled and shows it.
pub struct Progress {
    display: Display,
    /// Keys expected in all (an estimate from INFO keyspace), if known.
    total: Option<u64>,
    /// Keys done before this process started (resume).
    done_before: u64,
    counts: OutcomeCounts,
    started: Instant,
    stopping_noted: bool,
}

impl Progress {
    pub fn new(mode: ProgressMode, total: Option<u64>, done_before: u64) -> Progress {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
            ProgressMode::Auto => ProgressMode::Log,
            other => other,
        };
        let display = match mode {
            ProgressMode::Bar => {
                let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
                let template = if total.is_some() {
                    "{spinner} {elapsed_precise} [{wide_bar}] {human_pos}/{human_len} keys, {per_sec}, ETA {eta} {msg}"
                } else {
                    "{spinner} {elapsed_precise} {human_pos} keys, {per_sec} {msg}"
                };
                if let Ok(style) = ProgressStyle::with_template(template) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_position(done_before);
                Display::Bar(bar)
            }
            ProgressMode::Log => Display::Log {
                last: Instant::now(),
            },
            _ => Display::Off,
        };
        Progress {
            display,
            total,
            done_before,
            counts: OutcomeCounts::default(),
            started: Instant::now(),
            stopping_noted: false,
        }
    }

    /// A display that shows nothing (library callers, tests).
    pub fn hidden() -> Progress {
        Progress::new(ProgressMode::Off, None, 0)
    }

    /// Counts a journaled batch.
    pub fn record(&mut self, results: &[KeyResult]) {
        for result in results {
            self.counts.add(result.outcome, 1);
        }
        let done = self.done_before + self.counts.total();
        if let Display::Bar(bar) = &self.display {
            if let Some(total) = self.total
                && done > total
            {
                bar.set_length(done);
            }
            bar.set_position(done);
            if self.counts.failed > 0 {
                bar.set_message(format!("({} failed)", self.counts.failed));
            }
        }
        self.tick();
    }

    /// Writes a log line when one is due.
    pub fn tick(&mut self) {
        if let Display::Log { last } = &mut self.display
            && last.elapsed() >= LOG_INTERVAL
        {
            *last = Instant::now();
            crate::log::info(self.summary_line());
        }
    }

    pub fn note_stopping(&mut self) {
        if !self.stopping_noted {
            self.stopping_noted = true;
            if let Display::Bar(bar) = &self.display {
                bar.set_message("stopping after the current batch");
            }
        }
    }

    /// Clears the bar; the caller prints the final summary.
    pub fn finish(&mut self) {
        if let Display::Bar(bar) = &self.display {
            bar.finish_and_clear();
        }
    }

    /// Keys journaled by this process.
    pub fn counts(&self) -> OutcomeCounts {
        self.counts
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Keys per second in this process.
    pub fn rate(&self) -> f64 {
        let seconds = self.started.elapsed().as_secs_f64();
        if seconds > 0.0 {
            self.counts.total() as f64 / seconds
        } else {
            0.0
        }
    }

    fn summary_line(&self) -> String {
        let done = self.done_before + self.counts.total();
        let rate = self.rate();
        let eta = match self.total {
            Some(total) if rate > 0.0 && total > done => {
                format!(
                    ", ETA {}",
                    short_duration(Duration::from_secs_f64((total - done) as f64 / rate))
                )
            }
            _ => String::new(),
        };
        let of_total = self.total.map(|t| format!(" of ~{t}")).unwrap_or_default();
        format!(
            "{done}{of_total} keys done (restored {}, expired {}, skipped {}, failed {}), {:.0} keys/s{eta}",
            self.counts.restored,
            self.counts.expired,
            self.counts.skipped,
            self.counts.failed,
            rate
        )
    }
}
