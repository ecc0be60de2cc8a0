//! `--json` output against its documented schema (schema/memtrace.schema.json): every line
//! memtrace prints for real workloads validates, and every documented line type is produced.

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::{MemCgroup, Memtrace, Workload, privileged};

const SCHEMA: &str = include_str!("../../schema/memtrace.schema.json");

/// Traces one workload from go to exit with extra memtrace flags; returns every output line.
fn lines(workload_args: &[&str], memtrace_args: &[&str]) -> Vec<Value> {
    let mut workload = Workload::spawn(workload_args);
    let pid = workload.pid.to_string();
    let mut args = vec!["--pid", pid.as_str()];
    args.extend_from_slice(memtrace_args);
    let memtrace = Memtrace::attach(&args);
    workload.go();
    workload.record();
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
    output.lines
}

/// A process that calls exec: its lines include `exec`.
fn exec_lines() -> Vec<Value> {
    let mut workload = Workload::spawn(&[
        "exec",
        "--as",
        "memtrace-schema",
        "--",
        "madvise",
        "--op",
        "free:1:1",
    ]);
    let pid = workload.pid;
    let memtrace = Memtrace::attach(&["--pid", &pid.to_string()]);
    workload.go();
    workload.next_line();
    workload.record();
    let output = memtrace.finish();
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("memtrace-exec-{pid}")));
    assert!(output.status.success(), "{}", output.stderr);
    output.lines
}

/// Reclaim lines need memory pressure: a page-cache reader in a 128 MiB cgroup (stalls) and a
/// process allocating past a 100 MiB limit (an OOM kill), each under both `memtrace --pid` and
/// `memtrace reclaim --json`. Empty without a cgroup v1 memory controller (an error in CI).
fn reclaim_lines() -> Vec<Value> {
    let mut all = Vec::new();
    let Some(small) = MemCgroup::new("schema-stalls", 128 << 20) else {
        return all;
    };
    let mut reader = Workload::spawn_in_cgroup(&small.path, &["page-cache", "--mib", "384"]);
    let pid = reader.pid.to_string();
    let default = Memtrace::attach(&["--pid", &pid]);
    let reclaim = Memtrace::attach_with(&["reclaim", "--pid", &pid, "--json", "-i", "0.1"]);
    reader.go();
    reader.record();
    for output in [default.finish(), reclaim.finish()] {
        assert!(output.status.success(), "{}", output.stderr);
        all.extend(output.lines);
    }

    let Some(tiny) = MemCgroup::new("schema-oom", 100 << 20) else {
        return all;
    };
    let mut hog = Workload::spawn_in_cgroup(&tiny.path, &["hog", "--mib", "300"]);
    let pid = hog.pid.to_string();
    let default = Memtrace::attach(&["--pid", &pid]);
    let reclaim = Memtrace::attach_with(&["reclaim", "--json", "-i", "60"]);
    hog.go();
    hog.wait();
    reclaim.interrupt();
    for output in [default.finish(), reclaim.finish()] {
        assert!(output.status.success(), "{}", output.stderr);
        all.extend(output.lines);
    }
    all
}

/// Documented line types a test run cannot be made to produce: the OOM reaper acts only on a
/// victim that cannot exit by itself within two seconds.
const RARE_TYPES: [&str; 1] = ["oom_reaper"];

/// The `type` values the schema documents, from each alternative of its top-level `oneOf`
/// (inline, or a `$defs` reference).
fn documented_types(schema: &Value) -> BTreeSet<String> {
    let mut types = BTreeSet::new();
    for alternative in schema["oneOf"].as_array().expect("oneOf") {
        let definition = match alternative["$ref"].as_str() {
            Some(reference) => {
                let name = reference
                    .strip_prefix("#/$defs/")
                    .expect("a $defs reference");
                &schema["$defs"][name]
            }
            None => alternative,
        };
        let type_schema = &definition["properties"]["type"];
        if let Some(value) = type_schema["const"].as_str() {
            types.insert(value.to_owned());
        }
        for value in type_schema["enum"].as_array().into_iter().flatten() {
            types.insert(value.as_str().expect("type name").to_owned());
        }
    }
    types
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn every_line_validates_and_every_type_appears() {
    if !privileged() {
        return;
    }
    let schema: Value = serde_json::from_str(SCHEMA).expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("schema is a valid JSON Schema");

    let mut all = Vec::new();
    all.extend(lines(
        &[
            "madvise",
            "--op",
            "free:3:1",
            "--op",
            "dontneed:2:2",
            "--op",
            "nohugepage:1:4",
        ],
        &[],
    ));
    // MADV_FREE on a shared mapping fails: lines with an errno.
    all.extend(lines(&["madvise", "--shared", "--op", "free:1:1"], &[]));
    all.extend(lines(
        &["mmap", "--anon-private", "4", "--file-shared", "2"],
        &["--fault-events"],
    ));
    all.extend(lines(&["brk", "--grow", "16"], &[]));
    all.extend(exec_lines());
    all.extend(lines(&["mremap", "--pages", "4", "--to", "8"], &[]));
    all.extend(lines(
        &["process-madvise", "--advice", "pageout", "--pages", "4"],
        &["--follow"],
    ));

    all.extend(reclaim_lines());

    // `memtrace go --json` on a non-Go process: one go_verdict object.
    let mut workload = Workload::spawn(&["madvise", "--op", "dontneed:5:1"]);
    let pid = workload.pid.to_string();
    let memtrace = Memtrace::attach_with(&["go", "--pid", &pid, "--wait", "10", "--json"]);
    workload.go();
    workload.record();
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
    assert_eq!(output.lines.len(), 1, "one object");
    assert_eq!(output.lines[0]["verdict"], "not_go");
    all.extend(output.lines);

    let mut seen = BTreeSet::new();
    for line in &all {
        let errors: Vec<String> = validator
            .iter_errors(line)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{line}\ndoes not validate:\n{}",
            errors.join("\n")
        );
        seen.insert(line["type"].as_str().expect("type").to_owned());
    }
    let mut documented = documented_types(&schema);
    for rare in RARE_TYPES {
        assert!(documented.remove(rare), "{rare} is not documented");
        seen.remove(rare);
    }
    assert_eq!(
        seen, documented,
        "every documented line type must be produced, and nothing undocumented"
    );
}

#[test]
fn undocumented_fields_are_refused() {
    // The schema is strict: a field memtrace adds without documenting it fails the test above.
    let schema: Value = serde_json::from_str(SCHEMA).expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("valid schema");
    let start = serde_json::json!({
        "type": "start", "schema": 1, "version": "0.1.0", "pids": [1],
        "syscall_hooks": "tracepoints"
    });
    assert!(validator.is_valid(&start));
    let mut extra = start.clone();
    extra["surprise"] = Value::from(1);
    assert!(!validator.is_valid(&extra));
    let madvise = serde_json::json!({
        "type": "madvise", "pid": 5, "tid": 5, "caller": 5, "comm": "x", "ts_ns": 1,
        "latency_ns": 2, "start": 4096, "len": 4096, "advice": 8, "advice_name": "FREE",
        "release": true, "errno": null
    });
    assert!(validator.is_valid(&madvise));
    let mut extra = madvise.clone();
    extra["surprise"] = Value::from(1);
    assert!(!validator.is_valid(&extra));
}
