//! Which processes are traced: children with and without --follow, and every process.

mod support;

use serde_json::json;
use support::{Twins, Workload, advice_totals, privileged};

const DONTNEED: u32 = 4;

fn trace_fork(extra: &[&str]) -> (serde_json::Value, support::Output) {
    let mut workload = Workload::spawn(&[
        "fork",
        "--parent-calls",
        "3",
        "--child-calls",
        "5",
        "--child-pages",
        "10",
    ]);
    let pid = workload.pid.to_string();
    let mut args = vec!["--pid", pid.as_str()];
    args.extend_from_slice(extra);
    let memtrace = Twins::attach(&args);
    workload.go();
    let record = workload.record();
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
    (record, output)
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn follow_adds_children_forked_while_traced() {
    if !privileged() {
        return;
    }
    let (record, output) = trace_fork(&["--follow"]);
    let (parent, child) = (
        record["pid"].as_u64().unwrap() as u32,
        record["child"].as_u64().unwrap() as u32,
    );
    assert_eq!(output.pids(), vec![parent.min(child), parent.max(child)]);
    assert_eq!(
        advice_totals(output.process(parent), DONTNEED),
        Some((3, 0, 3 * 4096))
    );
    let child_entry = output.process(child);
    assert_eq!(advice_totals(child_entry, DONTNEED), Some((5, 0, 5 * 4096)));
    assert_eq!(
        child_entry["mappings"]["mmap"]["anon_private"],
        json!({"calls": 1, "bytes": record["child_mmap_bytes"]})
    );
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn children_are_not_traced_without_follow() {
    if !privileged() {
        return;
    }
    let (record, output) = trace_fork(&[]);
    let parent = record["pid"].as_u64().unwrap() as u32;
    assert_eq!(output.pids(), vec![parent]);
    assert_eq!(
        advice_totals(output.process(parent), DONTNEED),
        Some((3, 0, 3 * 4096))
    );
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn system_wide_sees_every_process() {
    if !privileged() {
        return;
    }
    let mut first = Workload::spawn(&["madvise", "--op", "free:11:1"]);
    let mut second = Workload::spawn(&["madvise", "--op", "dontneed:13:2"]);
    // No --pid: everything is traced; --comm keeps the report to the workloads.
    // Every process on the machine streams here: a large ring keeps a busy machine from
    // overflowing it (exactness needs no lost events, checked below).
    let memtrace = Twins::attach(&["--comm", "memtrace-worklo", "--ring-size", "65536"]);
    first.go();
    second.go();
    let (first, second) = (first.record(), second.record());
    // Stop as a user would: memtrace drains what the kernel sent before it reports.
    memtrace.interrupt();
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
    assert_eq!(output.summary()["lost"]["total"], 0, "events were lost");
    let (a, b) = (
        first["pid"].as_u64().unwrap() as u32,
        second["pid"].as_u64().unwrap() as u32,
    );
    assert_eq!(
        advice_totals(output.process(a), 8),
        Some((11, 0, 11 * 4096))
    );
    assert_eq!(
        advice_totals(output.process(b), DONTNEED),
        Some((13, 0, 13 * 8192))
    );
    // --comm filtered the report down to workloads only.
    let comms: Vec<_> = output.summary()["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["comm"].clone())
        .collect();
    assert!(comms.iter().all(|c| c == "memtrace-worklo"), "{comms:?}");
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn system_wide_counts_every_fault_of_a_process_born_while_traced() {
    if !privileged() {
        return;
    }
    let memtrace = Twins::attach(&["--comm", "memtrace-worklo", "--ring-size", "65536"]);
    // Born at least one clock tick after memtrace attached.
    std::thread::sleep(std::time::Duration::from_millis(30));
    let mut workload = Workload::spawn(&["faults", "--pages", "3000"]);
    let pid = workload.pid;
    // Let memtrace sample it alive (it is sampled once a second): what it faulted before that
    // sample (exec, startup) must count too.
    std::thread::sleep(std::time::Duration::from_millis(1300));
    workload.go();
    // /proc/PID/stat of the zombie: every fault of its life, exec included.
    let (_, (minflt, majflt)) = workload.record_and_final_faults();
    memtrace.interrupt();
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
    assert_eq!(output.summary()["lost"]["total"], 0, "events were lost");
    let faults = &output.process(pid)["faults"];
    assert!(minflt >= 3000, "{minflt}");
    assert_eq!(
        (faults["minor"].as_u64(), faults["major"].as_u64()),
        (Some(minflt), Some(majflt)),
        "{faults}"
    );
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn exec_names_the_new_program_and_keeps_counting() {
    if !privileged() {
        return;
    }
    let mut workload = Workload::spawn(&[
        "exec",
        "--before",
        "2",
        "--as",
        "memtrace-exec",
        "--",
        "madvise",
        "--op",
        "dontneed:3:1",
    ]);
    let pid = workload.pid;
    let memtrace = Twins::attach(&["--pid", &pid.to_string()]);
    workload.go();
    // The new program announces itself under the same pid, then does its work.
    assert_eq!(workload.next_line()["pid"], pid);
    let record = workload.record();
    let output = memtrace.finish();
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("memtrace-exec-{pid}")));
    assert!(output.status.success(), "{}", output.stderr);
    assert_eq!(record["pid"], pid);
    let execs: Vec<_> = output
        .lines
        .iter()
        .filter(|l| l["type"] == "exec")
        .collect();
    assert_eq!(execs.len(), 1, "{execs:?}");
    assert_eq!(
        (&execs[0]["pid"], &execs[0]["comm"]),
        (&json!(pid), &json!("memtrace-exec"))
    );
    let process = output.process(pid);
    assert_eq!(process["comm"], "memtrace-exec");
    assert_eq!(process["comm_before_exec"], json!(["memtrace-worklo"]));
    assert_eq!(process["exited"], true);
    assert!(
        process["explanation"].as_array().unwrap().iter().any(|s| s
            .as_str()
            .unwrap()
            .contains("memtrace-worklo became memtrace-exec")),
        "{process}"
    );
    // Calls before and after the exec are the same process's.
    assert_eq!(advice_totals(process, DONTNEED), Some((2 + 3, 0, 5 * 4096)));
}

/// Many children at once, more than the kernel filter once held (a 4096-entry table): the
/// filter now covers every pid below pid_max, so each child is followed and its one
/// MADV_DONTNEED counted, as the workload's own record says, with nothing lost.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn every_child_is_followed_however_many() {
    if !privileged() {
        return;
    }
    let mut workload = Workload::spawn(&[
        "fork-many",
        "--children",
        "4200",
        "--hold-ms",
        "4000",
        "--child-dontneed-pages",
        "1",
    ]);
    let pid = workload.pid;
    let memtrace = Twins::attach(&["--pid", &pid.to_string(), "--follow"]);
    workload.go();
    let record = workload.record();
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
    let children = record["children"].as_u64().unwrap();
    assert_eq!(children, 4200);
    let processes = output.summary()["processes"].as_array().unwrap().clone();
    let followed: Vec<&serde_json::Value> = processes.iter().filter(|p| p["pid"] != pid).collect();
    assert_eq!(followed.len() as u64, children, "one entry per child");
    let calls: u64 = followed
        .iter()
        .map(|p| advice_totals(p, DONTNEED).map_or(0, |(calls, _, _)| calls))
        .sum();
    assert_eq!(calls, children);
    assert_eq!(output.summary()["lost"]["total"], 0);
}
