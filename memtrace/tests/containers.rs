//! Processes in containers, and memtrace in one: pid namespaces, traced for real.

mod support;

use std::process::Command;

use support::{MEMTRACE, Memtrace, WORKLOAD, Workload, advice_totals, privileged};

const FREE: u32 = 8;
const DONTNEED: u32 = 4;

/// memtrace inside a pid namespace of its own (a container run without `--pid=host`) refuses
/// in one line, instead of counting nothing for the process it was given: the issue's
/// reproduction, where a workload releasing memory got "madvise: no calls".
#[test]
fn memtrace_in_its_own_pid_namespace_refuses() {
    if !privileged() {
        return;
    }
    let reproduction = format!(
        "sleep 30 | {WORKLOAD} --no-wait steady --pages 256 --period-ms 1 >/dev/null & exec {MEMTRACE} --pid $! -d 3"
    );
    let cases: [(&str, Vec<&str>); 3] = [
        (
            "--pid, /proc of the namespace",
            vec!["--fork", "--pid", "--mount-proc", "sh", "-c", &reproduction],
        ),
        (
            "system-wide, /proc of the namespace",
            vec!["--fork", "--pid", "--mount-proc", MEMTRACE, "-d", "1"],
        ),
        // /proc still the host's: memtrace's own pid is not the one /proc/self names.
        (
            "system-wide, the host's /proc",
            vec!["--fork", "--pid", MEMTRACE, "-d", "1"],
        ),
    ];
    for (case, args) in cases {
        let output = Command::new("unshare")
            .args(&args)
            .output()
            .expect("run unshare");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(1), "{case}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{case}: one line:\n{stderr}");
        assert!(
            stderr.starts_with("memtrace: not in the host's pid namespace (in pid:["),
            "{case}: {stderr}"
        );
        assert!(
            stderr.contains("--pid=host") && stderr.contains("hostPID: true"),
            "{stderr}"
        );
        assert!(stdout.is_empty(), "{case}: no report:\n{stdout}");
    }
}

/// The normal case: memtrace on the host, the workload as pid 1 of its own pid namespace.
/// Its calls are counted exactly under its host pid.
#[test]
fn a_process_in_its_own_pid_namespace_is_counted_by_its_host_pid() {
    if !privileged() {
        return;
    }
    let (mut workload, ns_pid) = Workload::spawn_in_pid_namespace(&[
        "madvise",
        "--op",
        "free:29:1",
        "--op",
        "dontneed:41:1",
    ]);
    assert_eq!(ns_pid, 1, "the workload is its namespace's init");
    assert_ne!(workload.pid, ns_pid);
    let pid = workload.pid.to_string();
    let memtrace = Memtrace::attach(&["--pid", &pid]);
    workload.go();
    let record = workload.record();
    assert_eq!(record["pid"], 1, "the record names the pid inside");
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
    let process = output.process(pid.parse().unwrap());
    assert_eq!(advice_totals(process, FREE), Some((29, 0, 29 * 4096)));
    assert_eq!(advice_totals(process, DONTNEED), Some((41, 0, 41 * 4096)));
}
