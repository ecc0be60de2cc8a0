//! bpftrace as an independent oracle: a script that prints `ready` once attached, stopped with
//! SIGINT, after which it prints its maps.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc::{Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

/// How long to wait after a SIGINT before sending another.
const RESIGNAL: Duration = Duration::from_secs(5);

pub struct Bpftrace {
    child: Child,
    /// Its stdout, line by line, read by a thread so that no wait can hang.
    lines: Receiver<String>,
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
        let stdout = BufReader::new(child.stdout.take().expect("bpftrace stdout"));
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let bpftrace = Self {
            child,
            lines,
            timeout,
        };
        loop {
            match bpftrace.lines.recv_timeout(timeout) {
                Ok(line) if line.trim() == "ready" => return bpftrace,
                Ok(_) => {}
                Err(e) => panic!("bpftrace did not attach within {timeout:?}: {e}"),
            }
        }
    }

    /// Stops it and returns what it printed then (its maps).
    pub fn finish(mut self) -> Vec<String> {
        // Once in a while (on a loaded machine) bpftrace 0.17 has not exited a minute after
        // SIGINT; another SIGINT every few seconds gets its maps printed.
        let deadline = Instant::now() + self.timeout;
        let mut text = Vec::new();
        loop {
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.min(RESIGNAL)) {
                Ok(line) => {
                    text.push(line);
                    // Printing: read the rest without signalling again.
                    while let Ok(line) = self.lines.recv_timeout(left) {
                        text.push(line);
                    }
                    break;
                }
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) if left > RESIGNAL => {}
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!(
                        "bpftrace did not print its maps within {:?} of SIGINT",
                        self.timeout
                    );
                }
            }
        }
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
