//! Signals and output failures at any moment: SIGINT, SIGTERM and SIGHUP end a run with its
//! final report, even one that arrives while memtrace is still starting; a report that cannot
//! be written fails the run.

mod support;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use support::{MEMTRACE, Workload, privileged, read_all_within};

/// Starts `memtrace --json --pid PID`, sends `signal` after `after`, and returns its exit status,
/// stdout and stderr.
fn signalled(
    pid: u32,
    signal: libc::c_int,
    after: Duration,
) -> (std::process::ExitStatus, String, String) {
    let mut child = Command::new(MEMTRACE)
        .args(["--json", "--pid", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn memtrace");
    std::thread::sleep(after);
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, signal) };
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let (stdout, stderr) = (
        read_all_within(stdout, Duration::from_secs(60)),
        read_all_within(stderr, Duration::from_secs(60)),
    );
    let Some((stdout, stderr)) = stdout.zip(stderr) else {
        let _ = child.kill();
        panic!("memtrace did not end within 60 s of signal {signal}");
    };
    let status = child.wait().expect("wait memtrace");
    (status, stdout, stderr)
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn a_signal_while_starting_ends_with_the_report() {
    if !privileged() {
        return;
    }
    let workload = Workload::spawn(&["madvise", "--op", "free:1:1"]);
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // 0.1 s: memtrace is checking or loading its programs, not yet attached. (Before its
        // first instruction runs, nothing of memtrace's can hold a signal.)
        let after = Duration::from_millis(100);
        let (status, stdout, stderr) = signalled(workload.pid, signal, after);
        assert!(
            status.success(),
            "signal {signal} after {after:?}: {status}\n{stderr}"
        );
        let summary: Value = stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["type"] == "summary")
            .unwrap_or_else(|| panic!("no summary after signal {signal}:\n{stdout}\n{stderr}"));
        assert_eq!(summary["stop_reason"], "interrupted", "{summary}");
        assert!(
            summary["processes"]
                .as_array()
                .expect("processes")
                .iter()
                .any(|p| p["pid"] == workload.pid),
            "{summary}"
        );
    }
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn a_report_that_cannot_be_written_fails_the_run() {
    if !privileged() {
        return;
    }
    let workload = Workload::spawn(&["madvise", "--op", "free:1:1"]);
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("open /dev/full");
    let output = Command::new(MEMTRACE)
        .args(["--pid", &workload.pid.to_string(), "--duration", "0.3"])
        .stdout(full)
        .output()
        .expect("run memtrace");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("writing to stdout failed") && stderr.contains("No space left on device"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A signal while the kernel produces events faster than memtrace drains them: the loop must
/// still hand the runtime its turn, or it never sees the signal (a Ctrl-C once went unanswered
/// for minutes under a flood).
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn a_signal_during_a_flood_ends_with_the_report() {
    if !privileged() {
        return;
    }
    // Tens of millions of calls each, from several processes: far more than memtrace drains,
    // so every drain stops at its bound.
    let mut workloads: Vec<Workload> = (0..3)
        .map(|_| Workload::spawn(&["bench-madvise", "--calls", "50000000"]))
        .collect();
    let pids: Vec<String> = workloads.iter().map(|w| w.pid.to_string()).collect();
    let mut child = Command::new(MEMTRACE)
        .arg("--json")
        .args(pids.iter().flat_map(|pid| ["--pid", pid.as_str()]))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn memtrace");
    let stderr = child.stderr.take().expect("stderr");
    let mut stderr = std::io::BufReader::new(stderr);
    let mut attached = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut attached).expect("attach line");
    assert!(attached.starts_with("memtrace: attached"), "{attached}");
    let stdout = child.stdout.take().expect("stdout");
    let lines = std::thread::spawn(move || read_all_within(stdout, Duration::from_secs(120)));
    for workload in &mut workloads {
        workload.go();
    }
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let ended = (0..600).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !ended {
        let _ = child.kill();
    }
    assert!(
        ended,
        "memtrace did not end within 60 s of SIGINT under a flood"
    );
    let stdout = lines.join().expect("reader").expect("stdout ends");
    let summary = stdout.lines().rev().find_map(|l| {
        serde_json::from_str::<Value>(l)
            .ok()
            .filter(|v| v["type"] == "summary")
    });
    let summary = summary.expect("a summary after the signal");
    assert_eq!(summary["stop_reason"], "interrupted");
}
