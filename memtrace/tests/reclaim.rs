//! Reclaim and OOM on a real kernel, inside memory cgroups (v1 or v2): memtrace's stall counts
//! against an independent tracefs count of the same tracepoints, lazily freed pages reclaimed
//! under pressure against the workload's own count, and OOM victims against the pid the test
//! spawned.

mod support;

use std::{io::Write as _, time::Duration};

use serde_json::Value;
use support::{MemCgroup, Memtrace, TraceInstance, Workload, privileged};

const BEGIN: &str = "vmscan/mm_vmscan_memcg_reclaim_begin";
const END: &str = "vmscan/mm_vmscan_memcg_reclaim_end";
const SHRINK: &str = "vmscan/mm_vmscan_lru_shrink_inactive";
const REAPER: [&str; 3] = [
    "oom/wake_reaper",
    "oom/skip_task_reaping",
    "oom/finish_task_reaping",
];

/// memcg reclaim begin/end and inactive-LRU scans run by one task.
fn memcg_reclaim_of(pid: u32) -> TraceInstance {
    let filter = format!("common_pid == {pid}");
    TraceInstance::new(
        "stalls",
        &[
            (BEGIN, filter.clone()),
            (END, filter.clone()),
            (SHRINK, filter),
        ],
    )
}

/// `(begin events, end events, sum of nr_reclaimed, sum of inactive pages scanned)`.
fn memcg_counts(oracle: &TraceInstance) -> (u64, u64, u64, u64) {
    let (mut begins, mut ends, mut reclaimed, mut scanned) = (0, 0, 0, 0);
    for line in oracle.lines() {
        if line.contains("mm_vmscan_memcg_reclaim_begin:") {
            begins += 1;
        } else if let Some((_, rest)) = line.split_once("mm_vmscan_memcg_reclaim_end:") {
            ends += 1;
            reclaimed += support::trace_number(rest, "nr_reclaimed=");
        } else if let Some((_, rest)) = line.split_once("mm_vmscan_lru_shrink_inactive:") {
            scanned += support::trace_number(rest, "nr_scanned=");
        }
    }
    (begins, ends, reclaimed, scanned)
}

/// The last line memtrace printed, which must be the reclaim summary.
fn reclaim_summary(lines: &[Value]) -> &Value {
    let last = lines.last().expect("no output");
    assert_eq!(last["type"], "reclaim_summary", "{last}");
    last
}

fn summary_process(summary: &Value, pid: u32) -> &Value {
    summary["processes"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["pid"] == pid))
        .unwrap_or_else(|| panic!("pid {pid} missing from {summary}"))
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn memcg_reclaim_stalls_match_an_independent_tracefs_count() {
    if !privileged() {
        return;
    }
    let Some(cgroup) = MemCgroup::new("stalls", 128 << 20) else {
        return;
    };
    let mut reader = Workload::spawn_in_cgroup(&cgroup.path, &["page-cache", "--mib", "768"]);
    let pid = reader.pid;
    let oracle = memcg_reclaim_of(pid);
    let memtrace = Memtrace::attach_with(&["reclaim", "--pid", &pid.to_string(), "--json"]);
    // The default report covers the traced process's stalls too.
    let default = Memtrace::attach(&["--pid", &pid.to_string()]);
    reader.go();
    let record = reader.record();
    assert_eq!(record["bytes_read"], 768u64 << 20);
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
    let default = default.finish();
    assert!(default.status.success(), "{}", default.stderr);
    let (begins, ends, oracle_reclaimed, oracle_scanned) = memcg_counts(&oracle);
    eprintln!(
        "tracefs: {begins} memcg stalls, {oracle_reclaimed} pages reclaimed, {oracle_scanned} scanned"
    );
    assert!(
        begins > 50,
        "the cgroup should have forced reclaim: {begins}"
    );
    assert_eq!(begins, ends);

    let summary = reclaim_summary(&output.lines);
    let memcg = &summary_process(summary, pid)["stalls"]["memcg"];
    assert_eq!(
        memcg["count"], begins,
        "memtrace {memcg} vs tracefs {begins}"
    );
    assert_eq!(memcg["nr_reclaimed"], oracle_reclaimed);
    // The reader reclaims only inside its own stalls: every inactive-LRU scan it ran counts.
    assert_eq!(memcg["nr_scanned"], oracle_scanned);
    assert!(memcg["total_ns"].as_u64().unwrap() > 0);
    assert!(memcg["max_ns"].as_u64().unwrap() > 0);
    assert!(memcg["p50_us"].as_u64().is_some() && memcg["p99_us"].as_u64().is_some());
    let histogram_total: u64 = memcg["histogram_us"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b[2].as_u64().unwrap())
        .sum();
    assert_eq!(histogram_total, begins);
    // Nothing else stalled under --pid.
    assert_eq!(
        summary_process(summary, pid)["stalls"]["direct"],
        Value::Null
    );
    assert_eq!(summary["stalls"]["memcg"]["count"], begins);
    let in_default = &default.process(pid)["reclaim"]["memcg"];
    assert_eq!(in_default["count"], begins, "{in_default}");
    assert_eq!(in_default["nr_reclaimed"], oracle_reclaimed);
    let streamed_default = default
        .lines
        .iter()
        .filter(|l| l["type"] == "reclaim_stall")
        .count();
    assert_eq!(streamed_default as u64, begins);

    // The streamed records agree with the kernel's histogram, one per stall, each > 0 ns.
    let stalls: Vec<&Value> = output
        .lines
        .iter()
        .filter(|l| l["type"] == "reclaim_stall")
        .collect();
    assert_eq!(stalls.len() as u64, begins);
    assert!(
        stalls
            .iter()
            .all(|s| s["pid"] == pid && s["kind"] == "memcg")
    );
    assert!(stalls.iter().all(|s| s["latency_ns"].as_u64().unwrap() > 0));
    let streamed: u64 = stalls
        .iter()
        .map(|s| s["nr_reclaimed"].as_u64().unwrap())
        .sum();
    assert_eq!(streamed, oracle_reclaimed);
    assert!(oracle_reclaimed > 0);
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn lazily_freed_pages_reclaimed_under_pressure_are_reported() {
    if !privileged() {
        return;
    }
    let Some(cgroup) = MemCgroup::new("lazyfree", 200 << 20) else {
        return;
    };
    let mut lazy = Workload::spawn_in_cgroup(&cgroup.path, &["lazyfree", "--mib", "150"]);
    let mut memtrace = Memtrace::attach_with(&[
        "reclaim",
        "--pid",
        &lazy.pid.to_string(),
        "--interval",
        "0.2",
        "--json",
    ]);
    memtrace.watch_stdout();
    let mut stdin = lazy.go_keeping_stdin();
    let freed = lazy.next_line();
    assert_eq!(freed["freed"], 150 << 20);
    // memtrace has sampled the lazily freed memory before the pressure. Each interval line is
    // drawn once a look at /proc answered, and looks go one at a time, so a line's look began
    // after the line before it was printed. Lines already received are passed over, but one
    // may still have been in the pipe: of the next three, the third comes from a look that
    // began after this point.
    memtrace.wait_for_lines("reclaim_interval", 3);
    let pressure =
        Workload::spawn_in_cgroup(&cgroup.path, &["--no-wait", "faults", "--pages", "38400"]);
    pressure.record();
    // And has sampled what the pressure left (the lines printed while it ran are passed over).
    memtrace.wait_for_lines("reclaim_interval", 3);
    stdin.write_all(b"count\n").expect("signal workload");
    let record = lazy.record();
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);

    let reclaimed = record["zero_pages"].as_u64().unwrap();
    assert!(
        reclaimed * 4096 > 50 << 20,
        "pressure should reclaim: {record}"
    );
    let summary = reclaim_summary(&output.lines);
    // pglazyfreed is system-wide: other processes may add to it, never take from it.
    let pglazyfreed = summary["vmstat_delta"]["pglazyfreed"].as_i64().unwrap();
    assert!(
        pglazyfreed >= reclaimed as i64,
        "pglazyfreed +{pglazyfreed} vs {reclaimed} pages read back as zero"
    );
    let lazy_free = &summary_process(summary, record["pid"].as_u64().unwrap() as u32)["lazy_free"];
    let dropped = lazy_free["dropped"].as_u64().unwrap();
    eprintln!("{reclaimed} pages reclaimed; pglazyfreed +{pglazyfreed}; LazyFree {lazy_free}");
    // smaps_rollup's LazyFree misses pages still in a per-CPU LRU batch (not yet marked
    // lazy-free): up to 31 per CPU at the peak.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let slack = 31 * cpus * 4096;
    assert!(
        dropped.abs_diff(reclaimed * 4096) <= slack,
        "LazyFree dropped {dropped} vs reclaimed {} (±{slack}): {lazy_free}",
        reclaimed * 4096
    );
}

/// Runs a workload allocating past a 100 MiB limit and checks that both a `--pid` memtrace
/// tracing another process and a system-wide `memtrace reclaim` name exactly the victim.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn oom_victim_is_reported_whoever_is_traced() {
    if !privileged() {
        return;
    }
    let Some(cgroup) = MemCgroup::new("oom", 100 << 20) else {
        return;
    };
    let bystander = Workload::spawn(&["lazyfree", "--mib", "1"]);
    let narrow = Memtrace::attach(&["--pid", &bystander.pid.to_string()]);
    let wide = Memtrace::attach_with(&["reclaim", "--json", "--interval", "60"]);
    let mut hog = Workload::spawn_in_cgroup(&cgroup.path, &["hog", "--mib", "300"]);
    let victim = hog.pid;
    // The OOM reaper's steps for the victim, recorded independently.
    let filter = format!("pid == {victim}");
    let reaper_oracle = TraceInstance::new("reaper", &REAPER.map(|event| (event, filter.clone())));
    let comm = std::fs::read_to_string(format!("/proc/{victim}/comm")).expect("comm");
    let comm = comm.trim_end();
    hog.go();
    let status = hog.wait();
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert_eq!(cgroup.oom_kills(), 1, "the cgroup's own count of OOM kills");
    // The OOM reaper is queued at the kill and acts two seconds later (OOM_REAPER_DELAY).
    std::thread::sleep(Duration::from_millis(2500));
    narrow.interrupt();
    wide.interrupt();
    let narrow = narrow.finish();
    let wide = wide.finish();
    assert!(narrow.status.success(), "{}", narrow.stderr);
    assert!(wide.status.success(), "{}", wide.stderr);

    let ours = |kills: &Value| -> Vec<Value> {
        kills
            .as_array()
            .expect("oom_kills")
            .iter()
            .filter(|k| k["pid"] == victim)
            .cloned()
            .collect()
    };
    use std::os::unix::fs::MetadataExt as _;
    let cgroup_inode = std::fs::metadata(&cgroup.path).expect("cgroup dir").ino();
    for (who, kills) in [
        ("--pid", &narrow.summary()["oom_kills"]),
        ("reclaim", &reclaim_summary(&wide.lines)["oom_kills"]),
    ] {
        let ours = ours(kills);
        assert_eq!(ours.len(), 1, "{who}: {kills}");
        let kill = &ours[0];
        eprintln!("{who}: {kill}");
        assert_eq!(kill["pid"], victim, "{who}: {kill}");
        assert_eq!(kill["comm"], comm, "{who}: {kill}");
        assert_eq!(kill["cgroup"], cgroup.name().as_str(), "{who}: {kill}");
        // The victim allocated past the limit itself: it is also the trigger, and the kernel
        // side's walk to its memory cgroup lands on the cgroup's directory.
        assert_eq!(kill["trigger_pid"], victim, "{who}: {kill}");
        assert_eq!(kill["trigger_memcg_id"], cgroup_inode, "{who}: {kill}");
        assert!(
            kill["cgroup_of"] == "victim" || kill["cgroup_of"] == "trigger",
            "{who}: {kill}"
        );
        // It died holding about the limit in anonymous memory.
        let anon_kb = kill["anon_rss_kb"].as_u64().unwrap();
        assert!(anon_kb > 80 << 10 && anon_kb <= 100 << 10, "{who}: {kill}");
    }
    // Whatever the reaper did, memtrace says the same as the oracle. Here the victim exits on
    // its own within the reaper's two-second delay, so the kernel usually records no reaper
    // step at all (wake_oom_reaper returns silently once the victim's mm is gone).
    let reaper_lines = reaper_oracle.lines();
    let saw = |name: &str| {
        reaper_lines
            .iter()
            .any(|l| l.contains(&format!("{name}: pid={victim}")))
    };
    for kills in [
        &narrow.summary()["oom_kills"],
        &reclaim_summary(&wide.lines)["oom_kills"],
    ] {
        let reaper = &ours(kills)[0]["reaper"];
        assert_eq!(reaper["woken"], saw("wake_reaper"), "{reaper}");
        assert_eq!(reaper["skipped"], saw("skip_task_reaping"), "{reaper}");
        assert_eq!(reaper["reaped"], saw("finish_task_reaping"), "{reaper}");
    }
    // The event line is streamed too.
    assert!(
        narrow
            .lines
            .iter()
            .any(|l| l["type"] == "oom_kill" && l["pid"] == victim)
    );
}

/// Every reclaim, kswapd and OOM program loads and attaches on this kernel (a hook that cannot
/// would be a warning), and the system-wide report has every section.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn every_reclaim_hook_attaches_here() {
    if !privileged() {
        return;
    }
    let output = std::process::Command::new(support::MEMTRACE)
        .args(["reclaim", "--duration", "0.5"])
        .output()
        .expect("run memtrace");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    for section in [
        "memtrace reclaim report",
        "Reclaim stalls (all processes)",
        "kswapd:",
        "/proc/vmstat",
    ] {
        assert!(stdout.contains(section), "{section} missing:\n{stdout}");
    }
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn reclaim_of_a_dead_pid_is_one_clear_error() {
    if !privileged() {
        return;
    }
    let mut child = std::process::Command::new("true").spawn().expect("spawn");
    let pid = child.id();
    child.wait().expect("reap");
    let output = std::process::Command::new(support::MEMTRACE)
        .args(["reclaim", "--pid", &pid.to_string()])
        .output()
        .expect("run memtrace");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("no process with pid {pid}")),
        "{stderr}"
    );
}
