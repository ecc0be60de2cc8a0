//! mmap, munmap, mremap and brk, traced for real and compared with each workload's record.

mod support;

use serde_json::{Value, json};
use support::{Twins, Workload, privileged};

fn trace(args: &[&str]) -> (Value, Value) {
    let mut workload = Workload::spawn(args);
    let memtrace = Twins::attach(&["--pid", &workload.pid.to_string()]);
    workload.go();
    let record = workload.record();
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
    let pid = record["pid"].as_u64().unwrap() as u32;
    assert_eq!(output.summary()["lost"]["total"], 0);
    (record, output.process(pid).clone())
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn mmap_and_munmap_by_kind() {
    if !privileged() {
        return;
    }
    let (record, process) = trace(&[
        "mmap",
        "--anon-private",
        "64",
        "--anon-shared",
        "16",
        "--file-private",
        "32",
        "--file-shared",
        "8",
    ]);
    let m = &process["mappings"];
    // Every mapping the workload made, by kind, and nothing else: the workload allocates
    // nothing between the go signal and its last munmap.
    assert_eq!(m["mmap"], record["mmap"], "{m}");
    assert_eq!(
        m["mmap"]["anon_private"],
        json!({"calls": 1, "bytes": 64 * 4096})
    );
    assert_eq!(
        m["mmap"]["file_shared"],
        json!({"calls": 1, "bytes": 8 * 4096})
    );
    assert_eq!(m["munmap"], record["munmap"]);
    assert_eq!(m["munmap"]["bytes"], (64 + 16 + 32 + 8) * 4096);
    assert_eq!(m["net_bytes"], 0);
    assert_eq!(m["failed"], json!({}));
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn brk_growth_and_shrink() {
    if !privileged() {
        return;
    }
    let (record, process) = trace(&["brk", "--grow", "1048576", "--shrink", "262144"]);
    let m = &process["mappings"];
    assert_eq!(record["grow"], 1 << 20);
    // The workload returns the break to where it started: grown 1 MiB, shrunk 256 KiB then 768 KiB.
    assert_eq!(m["brk_grow"], json!({"calls": 1, "bytes": record["grow"]}));
    assert_eq!(
        m["brk_shrink"],
        json!({"calls": 2, "bytes": record["shrink"]})
    );
    assert_eq!(m["brk_unknown"], 0);
    assert_eq!(m["net_bytes"], 0);
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn mremap_growth() {
    if !privileged() {
        return;
    }
    let (record, process) = trace(&["mremap", "--pages", "16", "--to", "80"]);
    let m = &process["mappings"];
    assert_eq!(m["mmap"]["anon_private"]["bytes"], record["mmap"]);
    assert_eq!(
        m["mremap_grow"],
        json!({"calls": 1, "bytes": record["mremap_grow"]})
    );
    assert_eq!(m["mremap_grow"]["bytes"], 64 * 4096);
    assert_eq!(m["munmap"]["bytes"], record["munmap"]);
    assert_eq!(m["net_bytes"], 0);
}
