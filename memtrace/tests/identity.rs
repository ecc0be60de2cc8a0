//! A process is its pid and its start time: a pid that passes to another process while memtrace
//! runs never merges the two, and memory taken "by reclaim" is never invented. Truth: the
//! workloads' own records, /proc/PID/stat (start times) and /proc/vmstat (whether anything was
//! reclaimed at all). Pids are reused on purpose through /proc/sys/kernel/ns_last_pid.

mod support;

use std::sync::Mutex;

use serde_json::Value;
use support::{
    Output, Twins, Workload, advice_totals, assert_same_syscalls, privileged, start_time,
};

const DONTNEED: u32 = 4;

/// The tests here steer pid allocation: one at a time.
static PIDS: Mutex<()> = Mutex::new(());

/// Starts `args` as a workload that gets `pid`, which must be free: the kernel hands out
/// ns_last_pid + 1 next. Another fork on the machine may take it first, so this retries.
fn spawn_with_pid(pid: u32, args: &[&str]) -> Workload {
    for _ in 0..20 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
            .expect("write ns_last_pid");
        let workload = Workload::spawn(args);
        if workload.pid == pid {
            return workload;
        }
        drop(workload);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("could not get pid {pid} back from the kernel");
}

/// Every entry of the summary with this pid; with a twin run, checked to be the same, entry
/// for entry, as those of the run that counted in the kernel.
fn entries(output: &Output, pid: u32) -> Vec<Value> {
    let of = |output: &Output| -> Vec<Value> {
        let mut entries: Vec<Value> = output.summary()["processes"]
            .as_array()
            .expect("processes")
            .iter()
            .filter(|p| p["pid"] == pid)
            .cloned()
            .collect();
        entries.sort_by_key(|p| p["start_time"].as_u64());
        entries
    };
    let entries = of(output);
    if let Some(counted) = &output.counted {
        let counted = of(counted);
        assert_eq!(entries.len(), counted.len(), "{entries:?}\n{counted:?}");
        for (records, counted) in entries.iter().zip(&counted) {
            assert_same_syscalls(records, counted);
        }
    }
    entries
}

/// A (madvise 3×DONTNEED) runs and exits; B then gets A's pid and makes 5 calls. Runs memtrace
/// with `args`, and returns its output, A's and B's start times and A's pid.
fn reuse_a_pid(args: &[&str]) -> (Output, u64, u64, u32) {
    let mut a = Workload::spawn(&["madvise", "--op", "dontneed:3:1"]);
    let pid = a.pid;
    let a_start = start_time(pid);
    let mut still = Workload::spawn(&["madvise", "--op", "dontneed:1:1"]);
    let still_pid = still.pid.to_string();
    let pid_arg = pid.to_string();
    let mut memtrace_args = args.to_vec();
    if args.is_empty() {
        memtrace_args = vec!["--pid", &pid_arg, "--pid", &still_pid];
    }
    let memtrace = Twins::attach(&memtrace_args);
    a.go();
    let _ = a.record();
    // Another clock tick, so the two start times differ.
    std::thread::sleep(std::time::Duration::from_millis(30));
    let mut b = spawn_with_pid(pid, &["madvise", "--op", "dontneed:5:1"]);
    let b_start = start_time(pid);
    b.go();
    let _ = b.record();
    still.go();
    let _ = still.record();
    // With --pid, memtrace stops by itself once both targets exited; system-wide, as a user.
    if !args.is_empty() {
        memtrace.interrupt();
    }
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
    assert_eq!(output.summary()["lost"]["total"], 0, "events were lost");
    assert_ne!(a_start, b_start);
    (output, a_start, b_start, pid)
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn a_target_that_exits_is_not_followed_into_the_next_process_with_its_pid() {
    if !privileged() {
        return;
    }
    let _pids = PIDS.lock().unwrap_or_else(|e| e.into_inner());
    let (output, a_start, _, pid) = reuse_a_pid(&[]);
    let entries = entries(&output, pid);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let a = &entries[0];
    assert_eq!(a["start_time"], a_start, "{a}");
    assert_eq!(a["exited"], true, "{a}");
    // A's 3 calls; none of B's 5.
    assert_eq!(advice_totals(a, DONTNEED), Some((3, 0, 3 * 4096)), "{a}");
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn system_wide_a_reused_pid_is_a_new_process() {
    if !privileged() {
        return;
    }
    let _pids = PIDS.lock().unwrap_or_else(|e| e.into_inner());
    let (output, a_start, b_start, pid) =
        reuse_a_pid(&["--comm", "memtrace-worklo", "--ring-size", "65536"]);
    let entries = entries(&output, pid);
    assert_eq!(entries.len(), 2, "{entries:?}");
    let (a, b) = (&entries[0], &entries[1]);
    assert_eq!(
        (&a["start_time"], &b["start_time"]),
        (&a_start.into(), &b_start.into())
    );
    assert_eq!(a["exited"], true, "{a}");
    assert_eq!(b["exited"], true, "{b}");
    assert_eq!(advice_totals(a, DONTNEED), Some((3, 0, 3 * 4096)), "{a}");
    assert_eq!(advice_totals(b, DONTNEED), Some((5, 0, 5 * 4096)), "{b}");
}

/// `--stacks` keeps each process's stacks apart too: A's three DONTNEED calls and B's five are
/// counted under each one's own stacks, not added together under the pid.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn system_wide_a_reused_pid_has_stacks_of_its_own() {
    if !privileged() {
        return;
    }
    let _pids = PIDS.lock().unwrap_or_else(|e| e.into_inner());
    let (output, a_start, b_start, pid) = reuse_a_pid(&[
        "--comm",
        "memtrace-worklo",
        "--ring-size",
        "65536",
        "--stacks",
    ]);
    let entries = entries(&output, pid);
    assert_eq!(entries.len(), 2, "{entries:?}");
    let (a, b) = (&entries[0], &entries[1]);
    assert_eq!(
        (&a["start_time"], &b["start_time"]),
        (&a_start.into(), &b_start.into())
    );
    // The workload's madvise calls come from one loop: among the top stacks by calls, whatever
    // the dynamic loader's mmap calls leave out.
    let dontneed = |p: &Value| -> (u64, u64) {
        let stacks = p["stacks"]["top"].as_array().expect("stacks");
        stacks
            .iter()
            .filter(|s| s["call"] == "madvise" && s["detail"] == "DONTNEED")
            .map(|s| (s["calls"].as_u64().unwrap(), s["bytes"].as_u64().unwrap()))
            .fold((0, 0), |(c, b), (calls, bytes)| (c + calls, b + bytes))
    };
    assert_eq!(dontneed(a), (3, 3 * 4096), "{a}");
    assert_eq!(dontneed(b), (5, 5 * 4096), "{b}");
}

/// The reclaim counters of /proc/vmstat that say whether anything was reclaimed or reaped.
fn reclaimed() -> Vec<(String, u64)> {
    std::fs::read_to_string("/proc/vmstat")
        .expect("vmstat")
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(k, _)| k.starts_with("pgsteal_") || *k == "oom_kill")
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap_or(0)))
        .collect()
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn nothing_is_taken_when_nothing_was_reclaimed_while_processes_come_and_go() {
    if !privileged() {
        return;
    }
    let _pids = PIDS.lock().unwrap_or_else(|e| e.into_inner());
    let before = reclaimed();
    let memtrace = Twins::attach(&[
        "--comm",
        "memtrace-worklo",
        "--comm",
        "memtrace-exec",
        "--ring-size",
        "65536",
    ]);
    // Churn: processes that fault in 8 MiB and exit, and processes that exec, one after the
    // other, so freed address spaces are reused by the next ones.
    for round in 0..60 {
        let args: &[&str] = if round % 3 == 0 {
            &[
                "exec",
                "--before",
                "1",
                "--as",
                "memtrace-exec",
                "--",
                "faults",
                "--pages",
                "2048",
            ]
        } else {
            &["faults", "--pages", "2048"]
        };
        let mut workload = Workload::spawn(args);
        workload.go();
        let pid = workload.pid;
        let _ = workload.record();
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("memtrace-exec-{pid}")));
    }
    memtrace.interrupt();
    let output = memtrace.finish();
    let after = reclaimed();
    assert!(output.status.success(), "{}", output.stderr);
    assert_eq!(
        before, after,
        "the machine reclaimed or OOM-killed during the test: it needs a quiet machine"
    );
    let summary = output.summary();
    assert_eq!(summary["rss_taken_withheld"], Value::Null, "{summary}");
    let processes = summary["processes"].as_array().expect("processes");
    assert!(processes.len() >= 60, "{}", processes.len());
    for p in processes {
        let taken = &p["rss"]["external_drop"];
        for member in ["file", "anon", "swap", "shmem"] {
            assert_eq!(taken[member], 0, "pid {} {member}: {p}", p["pid"]);
        }
    }
}
