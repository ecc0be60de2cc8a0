//! Failures a user can cause: each gives one clear line on stderr and a non-zero exit, never a
//! panic; and an output that goes away loses none of what was gathered.

mod support;

use std::{
    fs,
    io::{BufRead as _, BufReader},
    os::unix::fs::MetadataExt as _,
    process::{Command, Output},
};

use support::{MEMTRACE, Memtrace, Workload, memtrace_as_nobody, privileged};

fn memtrace(args: &[&str]) -> Output {
    Command::new(MEMTRACE)
        .args(args)
        .output()
        .expect("run memtrace")
}

/// Exactly one line on stderr, containing `needle`, and a failing exit code.
fn assert_one_line_error(output: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "expected failure, got {}",
        output.status
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one line expected:\n{stderr}"
    );
    assert!(stderr.contains(needle), "expected {needle:?} in:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Exactly `line` on stderr, nothing else, and exit code 1.
fn assert_error_line(output: &Output, line: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr, format!("{line}\n"));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
}

/// A pid that existed a moment ago and is gone now.
fn dead_pid() -> String {
    let mut child = Command::new("true").spawn().expect("spawn true");
    child.wait().expect("wait true");
    child.id().to_string()
}

#[test]
fn pid_zero_or_negative_or_garbage_is_refused() {
    for (pid, needle) in [
        ("0", "0 is not a process id"),
        ("-5", "-5 is not a process id"),
        ("abc", "'abc' is not a process id"),
    ] {
        let output = memtrace(&["--pid", pid]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        // clap adds a hint line after the error; the error itself is the first line.
        assert!(
            stderr.lines().next().unwrap_or("").contains(needle),
            "{stderr}"
        );
    }
}

#[test]
fn no_such_pid() {
    // Checked before any privilege is needed, so this runs unprivileged too.
    let pid = dead_pid();
    let output = memtrace(&["--pid", &pid]);
    assert_one_line_error(&output, &format!("no process with pid {pid}"));
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn not_root() {
    if !privileged() {
        return;
    }
    let output = support::memtrace_unprivileged(&["--pid", "1"]);
    assert_one_line_error(&output, "needs root");
    assert!(String::from_utf8_lossy(&output.stderr).contains("sudo"));
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn tracefs_not_mounted() {
    if !privileged() {
        return;
    }
    // In a private mount namespace, unmount tracefs (the host keeps it) and run memtrace there.
    let script = format!(
        "umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing 2>/dev/null; \
         umount /sys/kernel/debug 2>/dev/null; exec {MEMTRACE} --pid 1"
    );
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("run unshare");
    assert_error_line(
        &output,
        "memtrace: tracefs is not mounted: run `mount -t tracefs nodev /sys/kernel/tracing` (as root) and retry",
    );
}

/// README's unprivileged setup, CAP_BPF and CAP_PERFMON without root, meets tracefs mounted
/// but root's alone (as the kernel mounts it by default): memtrace says it cannot read it, and
/// what grants access, instead of calling it unmounted.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn tracefs_not_readable_by_a_user_with_bpf_and_perfmon() {
    if !privileged() {
        return;
    }
    // The premise, from the kernel: tracefs is mounted at /sys/kernel/tracing, and nobody
    // (uid and gid 65534) may not enter it.
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    assert!(
        mountinfo
            .lines()
            .any(|l| l.contains(" /sys/kernel/tracing ") && l.contains(" - tracefs ")),
        "tracefs is not mounted at /sys/kernel/tracing:\n{mountinfo}"
    );
    let root = fs::metadata("/sys/kernel/tracing").expect("stat /sys/kernel/tracing");
    assert!(
        root.mode() & 0o005 == 0 && root.uid() != 65534 && root.gid() != 65534,
        "tracefs is open to nobody here (mode {:o}, uid {}, gid {}): mounted with gid= or mode=?",
        root.mode(),
        root.uid(),
        root.gid()
    );
    let output = memtrace_as_nobody(&["bpf", "perfmon"], &["--duration", "1"]);
    assert_error_line(
        &output,
        "memtrace: tracefs at /sys/kernel/tracing is not readable by this user (permission denied): \
         run memtrace as root, or let a group of yours read tracefs \
         (as root: `mount -o remount,gid=GROUP,mode=0750 /sys/kernel/tracing`)",
    );
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn duration_longer_than_the_workload_still_stops_at_exit() {
    if !privileged() {
        return;
    }
    let mut workload = Workload::spawn(&["madvise", "--op", "free:7:1"]);
    let memtrace = Memtrace::attach(&["--pid", &workload.pid.to_string(), "--duration", "1.5"]);
    workload.go();
    let record = workload.record();
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
    assert_eq!(output.summary()["stop_reason"], "target_exited");
    let pid = record["pid"].as_u64().unwrap() as u32;
    assert_eq!(
        support::advice_totals(output.process(pid), 8),
        Some((7, 0, 7 * 4096))
    );
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn duration_stops_tracing_a_live_process() {
    if !privileged() {
        return;
    }
    // The workload waits for a go signal that never comes: only --duration can stop memtrace.
    let workload = Workload::spawn(&["madvise", "--op", "free:1:1"]);
    let memtrace = Memtrace::attach(&["--pid", &workload.pid.to_string(), "--duration", "0.5"]);
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
    assert_eq!(output.summary()["stop_reason"], "duration");
    assert_eq!(
        output.process(workload.pid)["madvise"],
        serde_json::json!([])
    );
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn interrupt_prints_the_final_report() {
    if !privileged() {
        return;
    }
    let workload = Workload::spawn(&["madvise", "--op", "free:1:1"]);
    let memtrace = Memtrace::attach(&["--pid", &workload.pid.to_string()]);
    memtrace.interrupt();
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
    assert_eq!(output.summary()["stop_reason"], "interrupted");
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn closed_stdout_moves_the_report_to_stderr() {
    if !privileged() {
        return;
    }
    let mut workload = Workload::spawn(&["madvise", "--op", "free:40:1"]);
    // A second target that outlives the workload: memtrace stops because its stdout closed,
    // not because its targets exited.
    let mut sleeper = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("run sleep");
    let mut memtrace = Memtrace::attach(&[
        "--pid",
        &workload.pid.to_string(),
        "--pid",
        &sleeper.id().to_string(),
    ]);
    // Read the start line, let the workload work, then close our end, like
    // `memtrace --json | head -1`.
    let mut stdout = BufReader::new(memtrace.take_stdout());
    let mut first = String::new();
    stdout.read_line(&mut first).expect("start line");
    assert!(first.contains("\"type\":\"start\""), "{first}");
    workload.go();
    let record = workload.record();
    drop(stdout);
    let output = memtrace.finish();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(output.status.success(), "{}", output.stderr);
    assert!(output.stderr.contains("stdout closed"), "{}", output.stderr);
    // Nothing gathered is lost: the summary, with every call, is on stderr.
    let summary: serde_json::Value = output
        .stderr
        .lines()
        .find_map(|l| {
            serde_json::from_str(l)
                .ok()
                .filter(|v: &serde_json::Value| v["type"] == "summary")
        })
        .unwrap_or_else(|| panic!("no summary on stderr:\n{}", output.stderr));
    assert_eq!(summary["stop_reason"], "output_closed");
    let pid = record["pid"].as_u64().unwrap();
    let process = summary["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == pid)
        .expect("traced pid");
    assert_eq!(support::advice_totals(process, 8), Some((40, 0, 40 * 4096)));
}

/// A pid given twice is one target: listed once in the start line and the summary, its calls
/// counted once.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn a_pid_given_twice_is_traced_once() {
    if !privileged() {
        return;
    }
    let mut workload = Workload::spawn(&["madvise", "--op", "free:3:1"]);
    let pid = workload.pid.to_string();
    let memtrace = Memtrace::attach(&["--pid", &pid, "--pid", &pid]);
    workload.go();
    let record = workload.record();
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
    assert_eq!(output.lines[0]["type"], "start");
    assert_eq!(
        output.lines[0]["pids"],
        serde_json::json!([workload_pid(&record)])
    );
    assert_eq!(output.pids(), vec![workload_pid(&record)]);
    assert_eq!(
        support::advice_totals(output.process(workload_pid(&record)), 8),
        Some((3, 0, 3 * 4096))
    );
}

/// `--comm` longer than the 15 bytes the kernel keeps matches by those 15, and says so.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn a_long_comm_is_cut_where_the_kernel_cuts_it() {
    if !privileged() {
        return;
    }
    let mut workload =
        Workload::spawn_named("memtrace-long-name-x", &["madvise", "--op", "free:2:1"]);
    let memtrace = Memtrace::attach(&["--comm", "memtrace-long-name-x", "--duration", "60"]);
    workload.go();
    let record = workload.record();
    memtrace.interrupt();
    let output = memtrace.finish();
    assert!(
        output.stderr.contains(
            "--comm memtrace-long-name-x: the kernel keeps only the first 15 bytes of a process's name; matching 'memtrace-long-n'"
        ),
        "{}",
        output.stderr
    );
    let pid = workload_pid(&record);
    assert_eq!(output.process(pid)["comm"], "memtrace-long-n");
    assert_eq!(
        support::advice_totals(output.process(pid), 8),
        Some((2, 0, 2 * 4096))
    );
}

fn workload_pid(record: &serde_json::Value) -> u32 {
    record["pid"].as_u64().expect("pid in the record") as u32
}

/// `memtrace --json | head -1` on a process that does nothing: the reader's leaving is noticed
/// without a write, and memtrace stops with its report on stderr.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn a_closed_pipe_is_noticed_while_nothing_happens() {
    if !privileged() {
        return;
    }
    // Waits for a go signal that never comes: it makes no memory call.
    let workload = Workload::spawn(&["madvise", "--op", "free:1:1"]);
    let mut memtrace = Memtrace::attach(&["--pid", &workload.pid.to_string()]);
    let mut stdout = BufReader::new(memtrace.take_stdout());
    let mut first = String::new();
    stdout.read_line(&mut first).expect("start line");
    drop(stdout);
    // finish() fails the test if memtrace does not stop by itself within its timeout.
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
    assert!(output.stderr.contains("stdout closed"), "{}", output.stderr);
    assert!(
        output.stderr.contains("\"stop_reason\":\"output_closed\""),
        "{}",
        output.stderr
    );
}

/// Started with stdout closed (`>&-`): everything goes to stderr, with a warning, instead of
/// to the /dev/null the runtime put in its place.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn stdout_closed_at_start_writes_to_stderr() {
    if !privileged() {
        return;
    }
    let mut workload = Workload::spawn(&["madvise", "--op", "free:4:1"]);
    let pid = workload.pid;
    let mut memtrace = std::process::Command::new("sh")
        .args([
            "-c",
            &format!("exec {} --json --pid {pid} >&-", support::MEMTRACE),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run memtrace");
    // The go signal only after memtrace attached: wait for its attach line on stderr.
    let mut stderr = BufReader::new(memtrace.stderr.take().expect("stderr"));
    let mut seen = String::new();
    while !seen.contains("memtrace: attached") {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).expect("stderr") > 0, "{seen}");
        seen.push_str(&line);
    }
    workload.go();
    let record = workload.record();
    let rest = support::read_all_within(stderr, std::time::Duration::from_secs(30))
        .expect("memtrace stops when its target exits");
    assert!(memtrace.wait().expect("memtrace exits").success());
    let all = seen + &rest;
    assert!(
        all.contains("memtrace: warning: stdout is closed; writing everything to stderr"),
        "{all}"
    );
    let summary: serde_json::Value = all
        .lines()
        .find_map(|l| {
            serde_json::from_str(l)
                .ok()
                .filter(|v: &serde_json::Value| v["type"] == "summary")
        })
        .unwrap_or_else(|| panic!("no summary on stderr:\n{all}"));
    let process = summary["processes"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["pid"] == workload_pid(&record)))
        .expect("the workload in the summary");
    assert_eq!(support::advice_totals(process, 8), Some((4, 0, 4 * 4096)));
}
