//! stdout for live lines, JSON Lines and reports. It remembers when stdout went away (e.g.
//! `memtrace --json | head -3` exited) or failed (a full disk), so memtrace stops and writes its
//! final report to stderr instead of losing what it gathered; a failure other than the reader
//! leaving makes memtrace exit non-zero.

use std::{
    io::{self, Write as _},
    os::fd::AsRawFd as _,
    sync::atomic::{AtomicBool, Ordering},
};

pub struct Stdout {
    out: io::BufWriter<Box<dyn io::Write>>,
    closed: bool,
    /// Why writing failed, unless the reader merely went away (a broken pipe).
    error: Option<io::Error>,
}

impl Stdout {
    /// stdout, or stderr with a warning when memtrace was started with stdout closed (`>&-`).
    pub fn new() -> Self {
        let out: Box<dyn io::Write> = if started_closed() {
            eprintln!("memtrace: warning: stdout is closed; writing everything to stderr");
            Box::new(io::stderr())
        } else {
            Box::new(io::stdout())
        };
        Self {
            out: io::BufWriter::new(out),
            closed: false,
            error: None,
        }
    }

    /// Whether stdout is gone: the caller should stop.
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Notices a reader that went away while nothing was written (`memtrace --json | head -1`
    /// on a quiet process): without this, memtrace learns of it only at its next write.
    pub fn check_reader(&mut self) {
        if !self.closed && hung_up(io::stdout().as_raw_fd()) {
            self.failed(io::ErrorKind::BrokenPipe.into());
        }
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

/// Whether fd 1 was closed when memtrace started. Rust's runtime puts /dev/null on a closed
/// standard fd before `main`, after which a closed stdout cannot be told from `>/dev/null`; a
/// constructor in `.init_array` runs before that and records it.
static STDOUT_CLOSED_AT_START: AtomicBool = AtomicBool::new(false);

#[used]
#[unsafe(link_section = ".init_array")]
static RECORD_STDOUT_AT_START: extern "C" fn() = record_stdout_at_start;

extern "C" fn record_stdout_at_start() {
    // SAFETY: asks for an fd's flags; changes nothing.
    let closed = unsafe { libc::fcntl(libc::STDOUT_FILENO, libc::F_GETFD) } == -1;
    STDOUT_CLOSED_AT_START.store(closed, Ordering::Relaxed);
}

fn started_closed() -> bool {
    STDOUT_CLOSED_AT_START.load(Ordering::Relaxed)
}

/// Whether the reader side of `fd` has gone: a pipe whose reader closed reports POLLERR, a
/// terminal or socket that hung up POLLHUP, without waiting.
fn hung_up(fd: i32) -> bool {
    let mut poll = libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready > 0 && poll.revents & (libc::POLLERR | libc::POLLHUP) != 0
}
