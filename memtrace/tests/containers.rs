//! Processes in containers, and memtrace in one: pid namespaces, traced for real.

mod support;

use std::{io::Write as _, process::Command, time::Duration};

use serde_json::json;
use support::{MEMTRACE, MemCgroup, Memtrace, WORKLOAD, Workload, advice_totals, privileged};

const FREE: u32 = 8;
const DONTNEED: u32 = 4;

/// memtrace inside a pid namespace of its own (a container run without `--pid=host`) refuses
/// in one line, instead of counting nothing for the process it was given: the issue's
/// reproduction, where a workload releasing memory got "madvise: no calls".
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
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
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
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
    assert_eq!(
        process["nspid"], 1,
        "its pid inside its namespace: {process}"
    );
    assert_eq!(advice_totals(process, FREE), Some((29, 0, 29 * 4096)));
    assert_eq!(advice_totals(process, DONTNEED), Some((41, 0, 41 * 4096)));
}

/// Exactly the capabilities deploy/daemonset.yaml adds (CAP_SYS_RESOURCE only matters before
/// Linux 5.11), as root: what memtrace has in the DaemonSet.
const DAEMONSET_CAPABILITIES: [&str; 3] = [
    "setpriv",
    "--bounding-set=-all,+bpf,+perfmon,+sys_resource",
    "--inh-caps=-all",
];

const PARANOID: &str = "/proc/sys/kernel/perf_event_paranoid";

/// Where `kernel.perf_event_paranoid` is above 2 and the kernel then opens perf events for
/// CAP_SYS_ADMIN only, whatever CAP_PERFMON says (Debian's 5.10 and 6.1), checks that memtrace
/// with the DaemonSet's capabilities names the reason and the remedy, then sets 2 (as the
/// README asks on such kernels) until the guard drops.
fn perf_events_for_perfmon() -> Option<RestoreParanoid> {
    let level: i32 = std::fs::read_to_string(PARANOID)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if level <= 2 {
        return None;
    }
    let output = Command::new(DAEMONSET_CAPABILITIES[0])
        .args(&DAEMONSET_CAPABILITIES[1..])
        .args([support::MEMTRACE, "--duration", "1"])
        .output()
        .expect("run memtrace with the DaemonSet's capabilities");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Refused outright (5.10: the syscall tracepoints are required there), or in part (6.1: the
    // syscalls attach on trampolines, which need no perf event; the other tracepoints warn).
    if !stderr.contains("perf_event_open") {
        return None;
    }
    assert!(
        stderr.contains(&format!("kernel.perf_event_paranoid is {level} here"))
            && stderr.contains("sysctl kernel.perf_event_paranoid=2"),
        "{stderr}"
    );
    std::fs::write(PARANOID, "2").expect("set perf_event_paranoid");
    Some(RestoreParanoid(level))
}

struct RestoreParanoid(i32);

impl Drop for RestoreParanoid {
    fn drop(&mut self) {
        let _ = std::fs::write(PARANOID, self.0.to_string());
    }
}

/// With the DaemonSet's capabilities (no CAP_SYS_PTRACE), another process's smaps_rollup is
/// refused on Debian's 6.1 and 6.12 (this machine's 6.18 lets CAP_PERFMON read it). Whatever
/// the kernel decides (the oracle: `cat` with the same capabilities), memtrace reports exactly
/// what it may read: smaps_rollup's Rss where allowed; else the RSS of /proc/PID/status, equal
/// to what status says, with LazyFree unknown and why. The workload is non-dumpable, as a
/// daemon that dropped privileges is.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn without_ptrace_access_rss_comes_from_status() {
    if !privileged() {
        return;
    }
    let _paranoid = perf_events_for_perfmon();
    let mut workload = Workload::spawn(&["steady", "--pages", "256", "--undumpable"]);
    let pid = workload.pid;
    let memtrace = Memtrace::attach_wrapped(
        &DAEMONSET_CAPABILITIES,
        &["--json", "--pid", &pid.to_string()],
    );
    let mut stdin = workload.go_keeping_stdin();
    std::thread::sleep(Duration::from_millis(500));
    stdin.write_all(b"stop\n").expect("stop the workload");
    let rounds = workload.next_line();
    assert!(rounds["rounds"].as_u64() > Some(0), "{rounds}");
    // Idle now, waiting for its last line: its memory holds still while memtrace samples it.
    let truth = (status_memory(pid), smaps_rss(pid));
    let refused = !Command::new(DAEMONSET_CAPABILITIES[0])
        .args(&DAEMONSET_CAPABILITIES[1..])
        .args(["cat", &format!("/proc/{pid}/smaps_rollup")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run cat with the DaemonSet's capabilities")
        .success();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        (status_memory(pid), smaps_rss(pid)),
        truth,
        "the workload's memory moved"
    );
    memtrace.interrupt();
    let output = memtrace.finish();
    stdin.write_all(b"exit\n").expect("let the workload exit");
    workload.record();
    assert!(output.status.success(), "{}", output.stderr);
    let warning = format!(
        "memtrace: warning: pid {pid}: smaps_rollup needs ptrace access to the process (CAP_SYS_PTRACE"
    );
    let smaps = &output.process(pid)["smaps_rollup"];
    let ((rss, anon, file), smaps_rss) = truth;
    if !refused {
        eprintln!("this kernel lets the DaemonSet's capabilities read smaps_rollup");
        assert!(!output.stderr.contains(&warning), "{}", output.stderr);
        assert_eq!(smaps["last"]["rss"], smaps_rss, "{smaps}");
        assert_eq!(
            (&smaps["refused"], &smaps["status"]),
            (&json!(null), &json!(null))
        );
        return;
    }
    assert!(output.stderr.contains(&warning), "{}", output.stderr);
    assert_eq!(
        (&smaps["first"], &smaps["last"]),
        (&json!(null), &json!(null))
    );
    assert!(
        smaps["refused"]
            .as_str()
            .is_some_and(|why| why.contains("LazyFree, Pss and AnonHugePages unknown")),
        "{smaps}"
    );
    assert_eq!(
        (
            &smaps["status"]["rss"],
            &smaps["status"]["anon"],
            &smaps["status"]["file"]
        ),
        (&json!(rss), &json!(anon), &json!(file)),
        "{smaps}"
    );
}

/// Rss of /proc/PID/smaps_rollup, in bytes (read with the test's full privileges).
fn smaps_rss(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("smaps_rollup");
    text.lines()
        .find_map(|l| {
            l.strip_prefix("Rss:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .expect("an Rss line")
        * 1024
}

/// `(VmRSS, RssAnon, RssFile)` of a process from /proc/PID/status, in bytes.
fn status_memory(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kb = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {status}"))
    };
    (
        kb("VmRSS:") * 1024,
        kb("RssAnon:") * 1024,
        kb("RssFile:") * 1024,
    )
}

/// A process in a cgroup named as docker's systemd driver names a container's
/// (`docker-<id>.scope`), on cgroup v1 or v2, whichever holds the memory controller: memtrace
/// names the container, its runtime and the cgroup, and the process's pid inside its own
/// namespace. No container runtime needed, so this runs in every guest kernel too.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn a_cgroup_named_as_a_runtime_names_its_container() {
    if !privileged() {
        return;
    }
    // A fresh id per run: the test's pid, padded to 64 hex digits.
    let id = format!("{:0>64x}", u64::from(std::process::id()) << 8 | 0xd0);
    let Some(cgroup) = MemCgroup::named(&format!("docker-{id}.scope"), 256 << 20) else {
        return;
    };
    let mut workload = Workload::spawn_in_cgroup(&cgroup.path, &["madvise", "--op", "free:3:1"]);
    let pid = workload.pid;
    let memtrace = Memtrace::attach(&["--pid", &pid.to_string(), "--by", "container"]);
    workload.go();
    workload.record();
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
    // Grouped by container: the group is the container, with its memory cgroup's own limit.
    let groups = &output.summary()["groups"];
    assert_eq!(groups.as_array().map(Vec::len), Some(1), "{groups}");
    let group = &groups[0];
    assert_eq!(
        (&group["key"], &group["pids"], &group["released_bytes"]),
        (&json!(id), &json!([pid]), &json!(3 * 4096)),
        "{group}"
    );
    assert_eq!(group["cgroup"], cgroup.name());
    let version = match cgroup.version {
        support::CgroupVersion::V1 => "v1",
        support::CgroupVersion::V2 => "v2",
    };
    assert_eq!(
        (&group["memcg"]["version"], &group["memcg"]["limit"]),
        (&json!(version), &json!(256u64 << 20)),
        "{group}"
    );
    let process = output.process(pid);
    assert_eq!(
        (&process["cgroup"], &process["container"], &process["pod"]),
        (
            &json!(cgroup.name()),
            &json!({"runtime": "docker", "id": id}),
            &json!(null)
        ),
        "{process}"
    );
    // Not in a pid namespace of its own: the same pid inside.
    assert_eq!(process["nspid"], pid);
    assert_eq!(advice_totals(process, FREE), Some((3, 0, 3 * 4096)));
}
