//! A child process's output, line by line: a thread per pipe sends each line on a channel as
//! it is printed, so that the caller can wait for one line (memtrace's `attached`, a
//! workload's record) with a deadline and still has every line at the end.
//!
//! The one way both the integration tests (`tests/support`) and `cargo xtask bench` read
//! memtrace and the workloads: compiled into each with `#[path]` (std only).

use std::{
    io::{BufRead as _, BufReader, Read},
    sync::mpsc::{self, RecvTimeoutError},
    time::{Duration, Instant},
};

/// The line memtrace writes on stderr once its programs are attached.
pub const ATTACHED: &str = "memtrace: attached";

/// The lines read so far from one pipe, and those still to come.
pub struct Lines {
    incoming: mpsc::Receiver<String>,
    /// Every line received, in order.
    pub seen: Vec<String>,
}

impl Lines {
    /// Reads `pipe` on a thread of its own, which ends at EOF (or once `self` is dropped).
    pub fn of(pipe: impl Read + Send + 'static) -> Self {
        let (tx, incoming) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            incoming,
            seen: Vec::new(),
        }
    }

    /// The next line, waiting at most `timeout` (kept in `seen` too). The error says whether
    /// the pipe closed or the time ran out.
    pub fn next(&mut self, timeout: Duration) -> Result<&str, RecvTimeoutError> {
        let line = self.incoming.recv_timeout(timeout)?;
        self.seen.push(line);
        Ok(self.seen.last().map_or("", String::as_str))
    }

    /// Waits until a line for which `wanted` holds arrives, and returns when it did; None when
    /// the pipe closes or `timeout` passes first. The lines before it are kept in `seen`.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if wanted(self.next(left).ok()?) {
                return Some(Instant::now());
            }
        }
    }

    /// Waits for memtrace's [`ATTACHED`] line (on its stderr), as [`Lines::wait_for`].
    pub fn wait_attached(&mut self, timeout: Duration) -> Option<Instant> {
        self.wait_for(timeout, |line| line.starts_with(ATTACHED))
    }

    /// Every line that has arrived by now, without waiting.
    pub fn arrived(&mut self) -> &[String] {
        self.seen.extend(self.incoming.try_iter());
        &self.seen
    }

    /// Every line until the pipe closes (taken out of `seen`): Err with those read so far if
    /// it is still open after `timeout`.
    pub fn until_eof(&mut self, timeout: Duration) -> Result<Vec<String>, Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.next(deadline.saturating_duration_since(Instant::now())) {
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(std::mem::take(&mut self.seen)),
                Err(RecvTimeoutError::Timeout) => return Err(std::mem::take(&mut self.seen)),
            }
        }
    }
}
