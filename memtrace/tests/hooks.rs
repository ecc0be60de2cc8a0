//! How the memory syscalls are hooked: on BPF trampolines where the kernel allows them, else
//! on their tracepoints. What memtrace says it attached is checked against the kernel's own
//! account of its open bpf links (/proc/PID/fdinfo), and the counts against the workload's
//! record, whichever way was taken.

mod support;

use support::{Twins, Workload, advice_totals, privileged};

const DONTNEED: u32 = 4;
const FREE: u32 = 8;
/// Syscalls on trampolines: madvise, process_madvise, mmap, munmap, mremap, brk. With a record
/// per call, each has an entry and an exit; counting in the kernel, the exit alone.
const TRAMPOLINE_SYSCALLS: usize = 6;

/// Links of memtrace's that the kernel reports as trampolines (`link_type: tracing`).
fn trampoline_links(pid: u32) -> usize {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("memtrace's fdinfo");
    fds.filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_to_string(fd.path()).ok())
        .filter(|info| {
            info.lines()
                .any(|l| l.split_whitespace().eq(["link_type:", "tracing"]))
        })
        .count()
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn syscall_hooks_are_what_the_kernel_has_attached_and_count_exactly() {
    if !privileged() {
        return;
    }
    let mut workload = Workload::spawn(&["madvise", "--op", "dontneed:3:1", "--op", "free:2:1"]);
    let pid = workload.pid;
    let memtrace = Twins::attach(&["--pid", &pid.to_string()]);
    let (records_pid, counted_pid) = memtrace.pids();
    let links = (trampoline_links(records_pid), trampoline_links(counted_pid));
    workload.go();
    let record = workload.record();
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
    let counted = output.counted.as_ref().expect("the twin's output");
    for (output, links, per_syscall) in [(&output, links.0, 2), (counted, links.1, 1)] {
        let start = output.lines.first().expect("a start line");
        let expected_links = match start["syscall_hooks"].as_str() {
            Some("trampolines") => per_syscall * TRAMPOLINE_SYSCALLS,
            Some("tracepoints") => 0,
            other => panic!("syscall_hooks {other:?} in {start}"),
        };
        assert_eq!(links, expected_links, "{start}");
    }
    // The workload's own record of what it called.
    let called = |advice: u32| {
        record["advice"]
            .as_array()
            .and_then(|list| list.iter().find(|a| a["advice"] == advice))
            .map(|a| {
                (
                    a["calls"].as_u64().unwrap(),
                    a["failed"].as_u64().unwrap(),
                    a["bytes"].as_u64().unwrap(),
                )
            })
    };
    let process = output.process(pid);
    assert_eq!(advice_totals(process, DONTNEED), called(DONTNEED));
    assert_eq!(advice_totals(process, FREE), called(FREE));
    assert_eq!(called(DONTNEED), Some((3, 0, 3 * 4096)));
}
