//! bpftrace as an independent oracle: a script that prints `ready` once attached, stopped with
//! SIGINT, after which it prints its maps.

use std::{
    process::{Child, Command, Stdio},
    sync::mpsc::RecvTimeoutError,
    time::{Duration, Instant},
};

use super::lines::Lines;

/// How long to wait after a SIGINT before sending another.
const RESIGNAL: Duration = Duration::from_secs(5);

pub struct Bpftrace {
    child: Child,
    /// Its stdout, line by line, read by a thread so that no wait can hang.
    lines: Lines,
    /// How long it may take to attach, or to print its maps once interrupted.
    timeout: Duration,
}

impl Bpftrace {
    /// Runs `script` and returns once it printed `ready`. Its stderr goes to the test's own when
    /// `stderr` is set, else nowhere.
    pub fn attach(script: &str, timeout: Duration, stderr: bool) -> Self {
        let mut child = Command::new("bpftrace")
            .args(["-B", "line", "-e", script])
            .stdout(Stdio::piped())
            .stderr(if stderr {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("spawn bpftrace");
        let lines = Lines::of(child.stdout.take().expect("bpftrace stdout"));
        let mut bpftrace = Self {
            child,
            lines,
            timeout,
        };
        if bpftrace
            .lines
            .wait_for(timeout, |line| line.trim() == "ready")
            .is_none()
        {
            panic!("bpftrace did not attach within {timeout:?}");
        }
        bpftrace.lines.seen.clear();
        bpftrace
    }

    /// Stops it and returns what it printed then (its maps).
    pub fn finish(mut self) -> Vec<String> {
        // Once in a while (on a loaded machine) bpftrace 0.17 has not exited a minute after
        // SIGINT; another SIGINT every few seconds gets its maps printed.
        let deadline = Instant::now() + self.timeout;
        let text = loop {
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.next(left.min(RESIGNAL)) {
                Ok(_) => {
                    // Printing: read the rest without signalling again (lines that came
                    // before a timeout are kept too).
                    let (Ok(all) | Err(all)) = self.lines.until_eof(left);
                    break all;
                }
                Err(RecvTimeoutError::Disconnected) => break std::mem::take(&mut self.lines.seen),
                Err(RecvTimeoutError::Timeout) if left > RESIGNAL => {}
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!(
                        "bpftrace did not print its maps within {:?} of SIGINT",
                        self.timeout
                    );
                }
            }
        };
        let _ = self.child.wait();
        text
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
