//! Memory syscalls counted in the kernel (runs that print only totals: the text report, the
//! live view, Prometheus, `--json --no-events`) are exact, process by process, across exits and
//! across a pid passing from one process to the next; each process's memory cgroup is the one
//! it ran in. Truth: the workloads' own records, the per-call records of a second memtrace on
//! the same processes, /proc/PID/stat start times, and the cgroup directory's inode
//! (`stat -c %i`). Pids are reused on purpose through /proc/sys/kernel/ns_last_pid.

mod support;

use std::{os::unix::fs::MetadataExt as _, sync::Mutex, time::Duration};

use serde_json::Value;
use support::{MemCgroup, Output, Twins, Workload, advice_totals, privileged, start_time};

/// The tests here steer pid allocation: one at a time.
static PIDS: Mutex<()> = Mutex::new(());

/// The name this file's workloads run under, so a system-wide run picks out only them.
const NAME: &str = "mt-totals";

/// Starts a workload named [`NAME`] that gets `pid` (free: the kernel hands out ns_last_pid +
/// 1 next), retrying when another fork on the machine takes it first.
fn spawn_with_pid(pid: u32, args: &[&str]) -> Workload {
    for _ in 0..20 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
            .expect("write ns_last_pid");
        let workload = Workload::spawn_named(NAME, args);
        if workload.pid == pid {
            return workload;
        }
        drop(workload);
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("could not get pid {pid} back from the kernel");
}

/// The summary entry of the process that had `pid` and started at `start`.
fn entry(output: &Output, pid: u32, start: u64) -> &Value {
    output.summary()["processes"]
        .as_array()
        .and_then(|ps| {
            ps.iter()
                .find(|p| p["pid"] == pid && p["start_time"] == start)
        })
        .unwrap_or_else(|| {
            panic!(
                "no entry for pid {pid} started at {start}: {}",
                output.summary()
            )
        })
}

/// Every advice the workload's record lists, with its calls, failures and bytes.
fn advice_of(record: &Value) -> Vec<(u32, (u64, u64, u64))> {
    record["advice"]
        .as_array()
        .expect("record advice")
        .iter()
        .map(|a| {
            let n = |k: &str| a[k].as_u64().expect("count");
            (n("advice") as u32, (n("calls"), n("failed"), n("bytes")))
        })
        .collect()
}

/// Six processes, one after the other, on one pid: madvise on four threads at once, madvise
/// with failures, brk, mmap of each kind, mremap, madvise again. Each exits before the next
/// takes its pid. Both memtraces trace every process; the one that counts in the kernel must
/// give each process exactly its own calls.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn kernel_totals_are_each_process_own_across_pid_reuse_and_exits() {
    if !privileged() {
        return;
    }
    let _pids = PIDS.lock().unwrap_or_else(|e| e.into_inner());
    let memtrace = Twins::attach(&["--comm", NAME, "--ring-size", "65536"]);
    let rounds: [&[&str]; 6] = [
        &[
            "madvise",
            "--threads",
            "4",
            "--op",
            "dontneed:200:1",
            "--op",
            "free:100:2",
            "--op",
            "nohugepage:3:512",
        ],
        &[
            "madvise",
            "--shared",
            "--op",
            "free:5:1",
            "--op",
            "dontneed:7:3",
        ],
        &["brk", "--grow", "1048576", "--shrink", "262144"],
        &[
            "mmap",
            "--anon-private",
            "64",
            "--anon-shared",
            "16",
            "--file-private",
            "32",
            "--file-shared",
            "8",
        ],
        &["mremap", "--pages", "16", "--to", "80"],
        &["madvise", "--op", "dontneed:11:1"],
    ];
    let mut first = Workload::spawn_named(NAME, rounds[0]);
    let pid = first.pid;
    let mut done = Vec::new();
    first.go();
    done.push((start_time(pid), first.record()));
    for args in &rounds[1..] {
        // Another clock tick, so that start times differ.
        std::thread::sleep(Duration::from_millis(30));
        let mut next = spawn_with_pid(pid, args);
        let start = start_time(pid);
        next.go();
        done.push((start, next.record()));
    }
    std::thread::sleep(Duration::from_millis(300));
    memtrace.interrupt();
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
    let counted = output.counted.as_deref().expect("the kernel-counted run");
    assert_eq!(
        counted.summary()["lost"]["total"],
        0,
        "{}",
        counted.summary()
    );
    assert_eq!(output.summary()["lost"]["total"], 0);
    for (start, record) in &done {
        let kernel = entry(counted, pid, *start);
        let records = entry(&output, pid, *start);
        assert_eq!(kernel["exited"], true, "{kernel}");
        // Every call the workload made, and none of another process's.
        if record["advice"].is_array() {
            for (advice, expected) in advice_of(record) {
                assert_eq!(
                    advice_totals(kernel, advice),
                    Some(expected),
                    "advice {advice}: {kernel}"
                );
            }
            let advised: Vec<u64> = kernel["madvise"]
                .as_array()
                .map(|a| a.iter().filter_map(|e| e["advice"].as_u64()).collect())
                .unwrap_or_default();
            assert_eq!(advised.len(), advice_of(record).len(), "{kernel}");
        }
        // Its mappings as its own calls recorded them (they include its start-up, which the
        // workload's record does not).
        support::assert_same_syscalls(records, kernel);
    }
    // What the workloads' records say of the mapping calls, spelt out for the kernel's count
    // where their start-up (exec, the loader, malloc's first break) makes none of the same:
    // it grows the break, maps private files and anonymous memory, and shrinks nothing.
    let kernel = |round: usize| entry(counted, pid, done[round].0);
    let brk = &kernel(2)["mappings"];
    assert_eq!(brk["brk_shrink"]["bytes"], done[2].1["shrink"], "{brk}");
    assert_eq!(brk["brk_unknown"], 0, "{brk}");
    let mmap = &kernel(3)["mappings"]["mmap"];
    assert_eq!(mmap["file_shared"]["bytes"], 8 * 4096, "{mmap}");
    assert_eq!(mmap["anon_shared"]["bytes"], 16 * 4096, "{mmap}");
    let mremap = &kernel(4)["mappings"];
    assert_eq!(
        mremap["mremap_grow"]["bytes"], done[4].1["mremap_grow"],
        "{mremap}"
    );
}

/// The memory cgroup the kernel programs read for a process is the cgroup it ran in: the
/// inode of the cgroup's directory, in the thread's exit record and in the process's totals.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn memory_cgroup_ids_are_the_cgroup_directory_inode() {
    if !privileged() {
        return;
    }
    let Some(cgroup) = MemCgroup::new("cgroup-id", 1 << 30) else {
        return;
    };
    let inode = std::fs::metadata(&cgroup.path)
        .expect("cgroup directory")
        .ino();
    let mut workload =
        Workload::spawn_in_cgroup(&cgroup.path, &["madvise", "--op", "dontneed:3:1"]);
    let pid = workload.pid;
    let memtrace = Twins::attach(&["--pid", &pid.to_string()]);
    workload.go();
    let record = workload.record();
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
    let exits: Vec<&Value> = output
        .lines
        .iter()
        .filter(|l| l["type"] == "thread_exit" && l["pid"] == pid)
        .collect();
    assert!(!exits.is_empty(), "no thread_exit line");
    for exit in exits {
        assert_eq!(exit["memory_cgroup_id"], inode, "{exit}");
    }
    let counted = output.counted.as_deref().expect("the kernel-counted run");
    let process = counted.process(pid);
    assert_eq!(process["memory_cgroup_id"], inode, "{process}");
    assert_eq!(output.process(pid)["memory_cgroup_id"], inode);
    assert_eq!(
        advice_totals(process, 4),
        Some((3, 0, 3 * 4096)),
        "{record}"
    );
}
