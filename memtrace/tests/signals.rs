//! Signals and output failures at any moment: SIGINT, SIGTERM and SIGHUP end a run with its
//! final report, even one that arrives while memtrace is still starting; a report that cannot
//! be written fails the run.

mod support;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
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

/// A signal while the kernel produces events faster than memtrace drains them: the loop stops
/// draining new records at once, drains what the ring holds with the programs detached, and
/// reports (a Ctrl-C once went unanswered for minutes under a flood, while the runtime never
/// had a turn to see it). Judged by how many records were printed after the signal, which
/// a loop that keeps draining exceeds many times over, not by a time: a debug build under
/// QEMU's emulation prints fewer than a thousand lines a second.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn a_signal_during_a_flood_ends_with_the_report() {
    if !privileged() {
        return;
    }
    // Tens of millions of calls each, from several processes: far more than memtrace drains.
    let mut workloads: Vec<Workload> = (0..3)
        .map(|_| Workload::spawn(&["bench-madvise", "--calls", "50000000"]))
        .collect();
    let pids: Vec<String> = workloads.iter().map(|w| w.pid.to_string()).collect();
    const RING_KIB: usize = 1024;
    let mut child = Command::new(MEMTRACE)
        .args(["--json", "--ring-size", &RING_KIB.to_string()])
        .args(pids.iter().flat_map(|pid| ["--pid", pid.as_str()]))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn memtrace");
    let stderr = child.stderr.take().expect("stderr");
    let mut stderr = BufReader::new(stderr);
    let mut attached = String::new();
    stderr.read_line(&mut attached).expect("attach line");
    assert!(attached.starts_with("memtrace: attached"), "{attached}");
    let printed = Arc::new(AtomicUsize::new(0));
    let stdout = child.stdout.take().expect("stdout");
    let lines = {
        let printed = Arc::clone(&printed);
        std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                printed.fetch_add(1, Ordering::Relaxed);
                last = Some(line);
            }
            last
        })
    };
    for workload in &mut workloads {
        workload.go();
    }
    // Until the flood is under way: records are arriving.
    let deadline = Instant::now() + Duration::from_secs(120);
    while printed.load(Ordering::Relaxed) < 1000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    let before = printed.load(Ordering::Relaxed);
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    // A guard against a hang only (see above).
    let ended = (0..3000).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !ended {
        let _ = child.kill();
    }
    let last = lines.join().expect("reader");
    let after = printed.load(Ordering::Relaxed) - before;
    assert!(
        ended,
        "memtrace did not end within 5 minutes of SIGINT under a flood ({after} lines printed since)"
    );
    // What the ring can hold (records are at least 16 bytes), what the pipe and memtrace's
    // buffer held at the signal (lines are longer than 100 bytes), and the summary.
    let bound = RING_KIB * 1024 / 16 + (64 + 8) * 1024 / 100 + 1;
    assert!(
        after <= bound,
        "{after} lines printed after SIGINT, more than the ring and the pipe held ({bound}): the loop went on draining"
    );
    let summary = last
        .and_then(|l| serde_json::from_str::<Value>(&l).ok())
        .filter(|v| v["type"] == "summary")
        .expect("a summary after the signal, last");
    assert_eq!(summary["stop_reason"], "interrupted");
    assert!(
        summary["lost"]["total"].as_u64() > Some(0),
        "not a flood: nothing was lost, so the drain never fell behind"
    );
}
