//! Standard output, where the data goes (`status`, `verify`'s summary, the
//! line a job ends with): every write to stdout goes through here.
//!
//! A reader that closes the pipe early (`status | head -1`, `verify | true`)
//! has what it wanted, so a broken pipe is not an error: the write is
//! dropped, every later one too, and the command ends as it would have
//! (`verify` still exits 3 when something differs). Rust ignores SIGPIPE,
//! so the closed pipe shows up here as `ErrorKind::BrokenPipe`; `println!`
//! would panic on it instead.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};

/// Set once a write met a closed pipe: nobody is reading any more.
static READER_GONE: AtomicBool = AtomicBool::new(false);

/// Writes `text` to stdout and flushes it. A closed pipe ends output
/// quietly; any other failure (a full disk behind `> file`) is an error.
pub fn print(text: &str) -> Result<()> {
    write_to(&mut io::stdout().lock(), text).context("cannot write to standard output")
}

/// [`print`] with a newline.
pub fn println(text: &str) -> Result<()> {
    print(&format!("{text}\n"))
}

/// "1 key", "2 keys": a count with its noun, plural only when plural.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Whether a reader closed stdout; nothing more is written then.
pub fn reader_gone() -> bool {
    READER_GONE.load(Ordering::Relaxed)
}

fn write_to(out: &mut impl Write, text: &str) -> io::Result<()> {
    if reader_gone() {
        return Ok(());
    }
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => {
            READER_GONE.store(true, Ordering::Relaxed);
            Ok(())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose reader went away after `accepts` bytes.
    struct ClosedAfter {
        accepts: usize,
        written: Vec<u8>,
    }

    impl Write for ClosedAfter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.written.len() >= self.accepts {
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            let take = buf.len().min(self.accepts - self.written.len());
            self.written.extend_from_slice(&buf[..take]);
            Ok(take)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn counts_are_plural_only_when_plural() {
        assert_eq!(count(1, "key"), "1 key");
        assert_eq!(count(0, "key"), "0 keys");
        assert_eq!(count(2, "key"), "2 keys");
    }

    #[test]
    fn a_closed_pipe_stops_output_quietly_and_other_errors_do_not() {
        let mut out = ClosedAfter {
            accepts: 3,
            written: Vec::new(),
        };
        assert!(write_to(&mut out, "abcdef").is_ok());
        assert!(reader_gone());
        assert!(write_to(&mut out, "more").is_ok());
        assert_eq!(out.written, b"abc");
        READER_GONE.store(false, Ordering::Relaxed);

        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from(io::ErrorKind::StorageFull))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        assert!(write_to(&mut Full, "x").is_err());
        assert!(!reader_gone());
    }
}
