//! stdout for live lines, JSON Lines and reports. It remembers when stdout went away (e.g.
//! `memtrace --json | head -3` exited) or failed (a full disk), so memtrace stops and writes its
//! final report to stderr instead of losing what it gathered; a failure other than the reader
//! leaving makes memtrace exit non-zero.

use std::io::{self, Write as _};

pub struct Stdout {
    out: io::BufWriter<io::Stdout>,
    closed: bool,
    /// Why writing failed, unless the reader merely went away (a broken pipe).
    error: Option<io::Error>,
}

impl Stdout {
    pub fn new() -> Self {
        Self {
            out: io::BufWriter::new(io::stdout()),
            closed: false,
            error: None,
        }
    }

    /// Whether stdout is gone: the caller should stop.
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// A write that failed for another reason than the reader leaving: memtrace must not exit
    /// successfully after it.
    pub fn error(&self) -> Option<&io::Error> {
        self.error.as_ref()
    }

    /// One line (buffered); nothing once stdout is gone.
    pub fn line(&mut self, line: &str) {
        if self.closed {
            return;
        }
        if let Err(e) = writeln!(self.out, "{line}") {
            self.failed(e);
        }
    }

    pub fn flush(&mut self) {
        if !self.closed
            && let Err(e) = self.out.flush()
        {
            self.failed(e);
        }
    }

    /// The final report: on stdout, or on stderr if stdout is gone (before or while writing).
    pub fn report(&mut self, report: &str) {
        let report = report.trim_end();
        self.line(report);
        self.flush();
        if self.closed {
            eprintln!("{report}");
        }
    }

    fn failed(&mut self, error: io::Error) {
        self.closed = true;
        if error.kind() == io::ErrorKind::BrokenPipe {
            eprintln!("memtrace: stdout closed; stopping and writing the report to stderr");
        } else {
            eprintln!(
                "memtrace: cannot write to stdout ({error}); stopping and writing the report to stderr"
            );
            self.error = Some(error);
        }
    }
}
