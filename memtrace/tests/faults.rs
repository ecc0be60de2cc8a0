//! Page faults: memtrace's counts against the kernel's own (/proc/PID/stat of the exited
//! workload) over the same window. That equality checks memtrace's accounting (the window,
//! exited threads, pid reuse), not the counter: /proc sums the same per-task counters memtrace
//! reads. The independent part is the workload's own work: it touched N fresh pages, so
//! memtrace must count at least N faults.

mod support;

use support::{Memtrace, Workload, privileged, proc_faults};

/// Traces a workload from the go signal to its exit and returns memtrace's fault entry, the
/// workload's record and the /proc delta over the traced window.
fn trace(args: &[&str], options: &[&str]) -> (serde_json::Value, serde_json::Value, (u64, u64)) {
    let mut workload = Workload::spawn(args);
    let pid = workload.pid;
    let pid_arg = pid.to_string();
    let memtrace = Memtrace::attach(&[&["--pid", pid_arg.as_str()], options].concat());
    // Window start: memtrace is attached and the workload is blocked waiting for "go".
    let before = proc_faults(pid);
    workload.go();
    let (record, after) = workload.record_and_final_faults();
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
    let delta = (after.0 - before.0, after.1 - before.1);
    (output.process(pid)["faults"].clone(), record, delta)
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn minor_faults_equal_the_kernel_count() {
    if !privileged() {
        return;
    }
    let (faults, record, (minflt, majflt)) = trace(&["faults", "--pages", "5000"], &[]);
    // The workload touched 5000 fresh pages: at least that many faults in its own count, and
    // in memtrace's.
    assert!(record["minflt"].as_u64().unwrap() >= 5000, "{record}");
    assert!(faults["minor"].as_u64().unwrap() >= 5000, "{faults}");
    assert_eq!(faults["minor"], minflt, "{faults}");
    assert_eq!(faults["major"], majflt, "{faults}");
    // The default mode runs no program per fault, so it cannot tell user-mode faults apart.
    assert!(faults["user"].is_null(), "{faults}");
    assert!(faults["user_write"].is_null(), "{faults}");
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn fault_events_tell_user_mode_faults_and_writes() {
    if !privileged() {
        return;
    }
    let (faults, record, (minflt, majflt)) =
        trace(&["faults", "--pages", "5000"], &["--fault-events"]);
    assert!(record["minflt"].as_u64().unwrap() >= 5000, "{record}");
    assert!(faults["minor"].as_u64().unwrap() >= 5000, "{faults}");
    assert_eq!(faults["minor"], minflt, "{faults}");
    assert_eq!(faults["major"], majflt, "{faults}");
    // The 5000 touches were taken in user mode, on write, and are part of the minor count.
    let user = faults["user"].as_u64().expect("user faults");
    assert!(user >= 5000, "{faults}");
    assert!(faults["user_write"].as_u64().unwrap() >= 5000, "{faults}");
    assert!(minflt >= user, "{faults}");
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn major_faults_from_an_evicted_file() {
    if !privileged() {
        return;
    }
    let (faults, record, (minflt, majflt)) = trace(&["faults", "--file-pages", "256"], &[]);
    assert!(
        record["majflt"].as_u64().unwrap() > 0,
        "reading an evicted file must do I/O: {record}"
    );
    assert_eq!(faults["major"], majflt, "{faults}");
    assert_eq!(faults["minor"], minflt, "{faults}");
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn threads_faults_sum_to_the_process() {
    if !privileged() {
        return;
    }
    // Four threads each touching and releasing pages; they exit with the process.
    let (faults, _, (minflt, majflt)) = trace(
        &["madvise", "--threads", "4", "--op", "dontneed:200:1"],
        &[],
    );
    assert_eq!(
        (faults["minor"].as_u64(), faults["major"].as_u64()),
        (Some(minflt), Some(majflt))
    );
}

/// `(minflt, majflt)` of a process once it sleeps with counters that no longer move.
fn settled_faults(pid: u32) -> (u64, u64) {
    let mut last = proc_faults(pid);
    loop {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let sleeping = stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('S'));
        let now = proc_faults(pid);
        if sleeping && now == last {
            return now;
        }
        last = now;
    }
}

/// System-wide, a process alive at attach that faults only later, before memtrace first meets
/// it: its minor faults count from attach, the window of the kernel's user-mode fault count,
/// so they equal the kernel's delta and are never below the user-mode count.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn system_wide_faults_of_a_process_alive_at_attach_count_from_attach() {
    if !privileged() {
        return;
    }
    let mut workload = Workload::spawn(&["faults", "--pages", "3000"]);
    let pid = workload.pid;
    // Once it sleeps on stdin (it may still fault on its way there after saying it is ready),
    // it is blocked waiting for "go" until after memtrace attached: no fault in between.
    let before = settled_faults(pid);
    let memtrace = Memtrace::attach(&[
        "--comm",
        "memtrace-worklo",
        "--ring-size",
        "65536",
        "--fault-events",
    ]);
    workload.go();
    // A zombie now: its exit record is in the ring, which memtrace drains before reporting.
    let (_, after) = workload.record_and_final_faults();
    memtrace.interrupt();
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
    let faults = &output.process(pid)["faults"];
    assert_eq!(faults["minor"], after.0 - before.0, "{faults}");
    assert_eq!(faults["major"], after.1 - before.1, "{faults}");
    let user = faults["user"].as_u64().expect("user faults");
    assert!(user >= 3000, "{faults}");
    assert!(faults["minor"].as_u64().unwrap() >= user, "{faults}");
}
