//! madvise and process_madvise, traced for real and compared with each workload's own record.

mod support;

use serde_json::Value;
use support::{Twins, Workload, advice_totals, advice_values, privileged};

const FREE: u32 = 8;
const DONTNEED: u32 = 4;
const NOHUGEPAGE: u32 = 15;
const PAGEOUT: u32 = 21;

/// Traces one workload from start to exit.
fn trace(args: &[&str]) -> (Value, support::Output) {
    let mut workload = Workload::spawn(args);
    let pid = workload.pid.to_string();
    let memtrace = Twins::attach(&["--pid", &pid]);
    workload.go();
    let record = workload.record();
    // memtrace stops by itself when the traced process exits.
    let output = memtrace.finish();
    assert!(
        output.status.success(),
        "memtrace failed: {}\n{}",
        output.status,
        output.stderr
    );
    assert_eq!(output.summary()["stop_reason"], "target_exited");
    assert_eq!(output.summary()["lost"]["total"], 0);
    (record, output)
}

/// Every advice in the workload's record appears in memtrace's summary with the same calls,
/// failures and bytes, and memtrace saw no advice the workload did not make.
fn assert_matches_record(record: &Value, process: &Value) {
    for entry in record["advice"].as_array().expect("record advice") {
        let advice = entry["advice"].as_u64().unwrap() as u32;
        let expected = (
            entry["calls"].as_u64().unwrap(),
            entry["failed"].as_u64().unwrap(),
            entry["bytes"].as_u64().unwrap(),
        );
        assert_eq!(
            advice_totals(process, advice),
            Some(expected),
            "advice {advice}: {process}"
        );
    }
    assert_eq!(
        advice_values(&process["madvise"]),
        advice_values(&record["advice"]),
        "{process}"
    );
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn free_and_dontneed_counted_exactly_and_hints_are_not_releases() {
    if !privileged() {
        return;
    }
    let (record, output) = trace(&[
        "madvise",
        "--op",
        "free:51:1",
        "--op",
        "dontneed:51:1",
        "--op",
        "nohugepage:1:512",
    ]);
    let pid = record["pid"].as_u64().unwrap() as u32;
    assert_eq!(output.pids(), vec![pid], "only the traced pid is reported");
    let process = output.process(pid);
    assert_matches_record(&record, process);
    // The brief's numbers, spelled out: 51 calls of one 4 KiB page each.
    assert_eq!(advice_totals(process, FREE), Some((51, 0, 208_896)));
    assert_eq!(advice_totals(process, DONTNEED), Some((51, 0, 208_896)));
    assert_eq!(advice_totals(process, NOHUGEPAGE), Some((1, 0, 2 << 20)));
    // NOHUGEPAGE is a hint: released bytes are FREE + DONTNEED only.
    assert_eq!(process["released_bytes"], 2 * 208_896);
    assert_eq!(process["comm"], "memtrace-worklo"); // the kernel truncates comm to 15 bytes

    // One event line per call, each for the traced pid.
    let events: Vec<&Value> = output
        .lines
        .iter()
        .filter(|l| l["type"] == "madvise")
        .collect();
    assert_eq!(events.len(), 103);
    assert!(
        events
            .iter()
            .all(|e| e["pid"] == pid && e["errno"].is_null())
    );
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn free_on_a_shared_mapping_is_a_failed_call() {
    if !privileged() {
        return;
    }
    let (record, output) = trace(&[
        "madvise",
        "--shared",
        "--op",
        "free:3:1",
        "--op",
        "dontneed:2:1",
    ]);
    let pid = record["pid"].as_u64().unwrap() as u32;
    let process = output.process(pid);
    assert_matches_record(&record, process);
    // MADV_FREE works on private anonymous memory only: EINVAL here, nothing released.
    assert_eq!(record["advice"][1]["errnos"][0]["errno"], libc::EINVAL);
    assert_eq!(advice_totals(process, FREE), Some((3, 3, 0)));
    assert_eq!(process["released_bytes"], 2 * 4096);
    let failed: Vec<&Value> = output
        .lines
        .iter()
        .filter(|l| l["type"] == "madvise" && l["advice"] == FREE)
        .collect();
    assert_eq!(failed.len(), 3);
    assert!(failed.iter().all(|e| e["errno"] == libc::EINVAL));
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn threads_count_toward_their_process() {
    if !privileged() {
        return;
    }
    let (record, output) = trace(&["madvise", "--threads", "4", "--op", "free:25:2"]);
    let pid = record["pid"].as_u64().unwrap() as u32;
    assert_eq!(output.pids(), vec![pid]);
    let process = output.process(pid);
    assert_matches_record(&record, process);
    assert_eq!(advice_totals(process, FREE), Some((100, 0, 100 * 8192)));

    // Every event came from one of the workload's four threads, and all four were seen.
    let tids: Vec<u64> = record["tids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    let mut seen: Vec<u64> = output
        .lines
        .iter()
        .filter(|l| l["type"] == "madvise")
        .filter_map(|l| l["tid"].as_u64())
        .collect();
    seen.sort_unstable();
    seen.dedup();
    let mut expected = tids.clone();
    expected.sort_unstable();
    assert_eq!(seen, expected);
    assert_eq!(tids.len(), 4);
    assert!(
        !tids.contains(&u64::from(pid)),
        "work ran on the spawned threads"
    );
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn another_process_madvising_at_the_same_time_is_not_reported() {
    if !privileged() {
        return;
    }
    let mut traced = Workload::spawn(&["madvise", "--op", "dontneed:20:1"]);
    let mut other = Workload::spawn(&["madvise", "--op", "dontneed:30:1", "--op", "free:30:1"]);
    let memtrace = Twins::attach(&["--pid", &traced.pid.to_string()]);
    other.go();
    traced.go();
    let other_record = other.record();
    let record = traced.record();
    let output = memtrace.finish();
    let pid = record["pid"].as_u64().unwrap() as u32;
    assert_eq!(output.pids(), vec![pid]);
    assert_matches_record(&record, output.process(pid));
    // The other workload did make its calls.
    assert_eq!(other_record["advice"][0]["calls"], 30);
    let other_pid = other_record["pid"].as_u64().unwrap();
    assert!(output.lines.iter().all(|l| l["pid"] != other_pid));
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn process_madvise_is_charged_to_the_target() {
    if !privileged() {
        return;
    }
    let (record, output) = trace(&["process-madvise", "--advice", "pageout", "--pages", "16"]);
    let caller = record["pid"].as_u64().unwrap() as u32;
    let target = record["target"].as_u64().unwrap() as u32;
    assert!(
        record["errno"].is_null(),
        "process_madvise failed in the workload: {record}"
    );
    let advised = record["ret"].as_u64().unwrap();
    assert_eq!(advised, 16 * 4096);

    let target_entry = output.process(target);
    assert_eq!(advice_totals(target_entry, PAGEOUT), Some((1, 0, advised)));
    assert_eq!(target_entry["advised_by"], serde_json::json!([caller]));
    assert_eq!(target_entry["released_bytes"], advised);
    // The caller released none of its own memory.
    assert_eq!(output.process(caller)["madvise"], serde_json::json!([]));
    let event = output
        .lines
        .iter()
        .find(|l| l["type"] == "process_madvise")
        .expect("process_madvise event");
    assert_eq!(
        (event["pid"].as_u64(), event["caller"].as_u64()),
        (Some(target.into()), Some(caller.into()))
    );
}
