//! Global reclaim on a real kernel: reading sparse files twice the size of RAM through the page
//! cache fills memory past the watermarks, so kswapd wakes and the readers stall in direct
//! reclaim (no anonymous memory is needed and nothing is OOM-killed: page cache is always
//! reclaimable). `memtrace reclaim`'s counts against a private tracefs instance recording the
//! same tracepoints over a window inside memtrace's.
//!
//! A test binary of its own: the pressure is machine-wide, and the other reclaim tests assert
//! that their processes stall only in their memory cgroup.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use serde_json::Value;
use support::{Memtrace, TraceInstance, Workload, privileged, trace_number};

const KSWAPD_WAKE: &str = "vmscan/mm_vmscan_kswapd_wake";
const DIRECT_BEGIN: &str = "vmscan/mm_vmscan_direct_reclaim_begin";
const DIRECT_END: &str = "vmscan/mm_vmscan_direct_reclaim_end";
const MEMCG_BEGIN: &str = "vmscan/mm_vmscan_memcg_reclaim_begin";
const MEMCG_END: &str = "vmscan/mm_vmscan_memcg_reclaim_end";
const SHRINK: &str = "vmscan/mm_vmscan_lru_shrink_inactive";

/// What the oracle saw.
#[derive(Debug, Default)]
struct Counts {
    kswapd_wakes: u64,
    direct: (u64, u64),
    direct_reclaimed: u64,
    /// Direct stalls `(count, pages reclaimed)` per task.
    direct_by_task: BTreeMap<u32, (u64, u64)>,
    memcg: u64,
    /// Inactive-LRU pages `(scanned, reclaimed)` inside a stall and outside (kswapd, others).
    in_stalls: (u64, u64),
    background: (u64, u64),
}

/// The task pid of a trace line (`comm-PID [cpu] …`).
fn task_pid(line: &str) -> Option<u32> {
    let (task, _) = line.split_once(" [")?;
    task.trim().rsplit_once('-')?.1.parse().ok()
}

fn count(lines: &[String]) -> Counts {
    let mut counts = Counts::default();
    let mut stalled = BTreeSet::new();
    for line in lines {
        let pid = task_pid(line).unwrap_or_else(|| panic!("no task in {line}"));
        let fields = |event: &str| line.split_once(&format!("{event}:")).map(|(_, f)| f);
        if fields("mm_vmscan_kswapd_wake").is_some() {
            counts.kswapd_wakes += 1;
        } else if fields("mm_vmscan_direct_reclaim_begin").is_some() {
            counts.direct.0 += 1;
            stalled.insert(pid);
        } else if let Some(f) = fields("mm_vmscan_direct_reclaim_end") {
            counts.direct.1 += 1;
            let reclaimed = trace_number(f, "nr_reclaimed=");
            counts.direct_reclaimed += reclaimed;
            let task = counts.direct_by_task.entry(pid).or_default();
            task.0 += 1;
            task.1 += reclaimed;
            stalled.remove(&pid);
        } else if fields("mm_vmscan_memcg_reclaim_begin").is_some() {
            counts.memcg += 1;
            stalled.insert(pid);
        } else if fields("mm_vmscan_memcg_reclaim_end").is_some() {
            stalled.remove(&pid);
        } else if let Some(f) = fields("mm_vmscan_lru_shrink_inactive") {
            let scan = (
                trace_number(f, "nr_scanned="),
                trace_number(f, "nr_reclaimed="),
            );
            let slot = if stalled.contains(&pid) {
                &mut counts.in_stalls
            } else {
                &mut counts.background
            };
            slot.0 += scan.0;
            slot.1 += scan.1;
        }
    }
    counts
}

fn ram_mib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("MemTotal")
        / 1024
}

/// The thread ids of a live process.
fn threads_of(pid: u32) -> Vec<u32> {
    let tids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("/proc/PID/task")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    assert!(tids.contains(&pid), "{pid} has no main thread: {tids:?}");
    tids
}

/// Drops the page cache and waits until no kswapd is running and free memory stays above the
/// high watermark (`/proc/zoneinfo`), so nothing is in reclaim when the oracle's window opens
/// or closes.
fn quiet_reclaim() {
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    let quiet = || !kswapd_running() && above_high_watermarks();
    // Twice in a row, 100 ms apart: kswapd between two passes of its loop is not asleep.
    let mut quiet_before = false;
    for _ in 0..300 {
        let quiet_now = quiet();
        if quiet_now && quiet_before {
            return;
        }
        quiet_before = quiet_now;
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("reclaim did not go quiet within 30 s after dropping caches");
}

fn kswapd_running() -> bool {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .any(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // `pid (comm) S …`: the state follows the last ')'.
            stat.contains("(kswapd")
                && stat
                    .rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('R'))
        })
}

/// Every zone with managed pages has more free pages than its high watermark.
fn above_high_watermarks() -> bool {
    let zoneinfo = std::fs::read_to_string("/proc/zoneinfo").expect("zoneinfo");
    // Each zone's section starts with `Node N, zone NAME`; its first numbers are
    // `pages free`, `min`, `low`, `high`, `spanned`, `present`, `managed`.
    zoneinfo.split("Node ").skip(1).all(|zone| {
        let number = |name: &str| {
            zone.lines().find_map(|line| {
                let (key, value) = line.trim().rsplit_once(char::is_whitespace)?;
                (key.trim() == name).then(|| value.parse::<u64>().ok())?
            })
        };
        match (number("pages free"), number("high"), number("managed")) {
            (Some(free), Some(high), Some(managed)) => managed == 0 || free > high,
            _ => true,
        }
    })
}

/// kswapd, made to yield to everything else while the guard lives: on a slow machine (a guest
/// under emulation) it otherwise keeps free memory above the min watermark however fast the
/// readers allocate, and nothing ever stalls in direct reclaim. Restored on drop.
struct SlowKswapd {
    pids: Vec<i32>,
}

impl SlowKswapd {
    fn new() -> Self {
        let pids: Vec<i32> = std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.starts_with("kswapd"))
            })
            .collect();
        assert!(!pids.is_empty(), "no kswapd thread");
        for &pid in &pids {
            set_policy(pid, libc::SCHED_IDLE);
        }
        Self { pids }
    }
}

impl Drop for SlowKswapd {
    fn drop(&mut self) {
        for &pid in &self.pids {
            set_policy(pid, libc::SCHED_OTHER);
        }
    }
}

fn set_policy(pid: i32, policy: libc::c_int) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscall on a valid struct.
    let done = unsafe { libc::sched_setscheduler(pid, policy, &param) };
    assert_eq!(
        done,
        0,
        "sched_setscheduler({pid}): {}",
        std::io::Error::last_os_error()
    );
}

fn scan(v: &Value) -> (u64, u64) {
    (
        v["nr_scanned"].as_u64().unwrap(),
        v["nr_reclaimed"].as_u64().unwrap(),
    )
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn kswapd_and_direct_reclaim_match_an_independent_tracefs_count() {
    if !privileged() {
        return;
    }
    // One reader per CPU and twice RAM in all: on a slow machine (a guest under emulation) a
    // single reader never outpaces kswapd, and only an allocation that finds free memory
    // below the min watermark stalls in direct reclaim.
    let readers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    let mib = ram_mib() * 2 / readers as u64;
    // Start from free memory: page cache left by earlier tests keeps kswapd balancing (its wake
    // event fires only when it leaves sleep) and other tasks in direct reclaim across the window's
    // start, where the oracle would see ends without beginnings.
    quiet_reclaim();
    let mut workloads: Vec<Workload> = (0..readers)
        .map(|_| Workload::spawn(&["page-cache", "--mib", &mib.to_string()]))
        .collect();
    let memtrace = Memtrace::attach_with(&["reclaim", "--json", "--interval", "600", "--stacks"]);
    let reader_pids: Vec<u32> = workloads.iter().map(|w| w.pid).collect();
    // memtrace does not trace itself; the oracle leaves out every thread of it too (its /proc
    // worker's reads allocate, and under this pressure stall).
    let not_memtrace = threads_of(memtrace.pid())
        .iter()
        .map(|tid| format!("common_pid != {tid}"))
        .collect::<Vec<_>>()
        .join(" && ");
    let events = [
        KSWAPD_WAKE,
        DIRECT_BEGIN,
        DIRECT_END,
        MEMCG_BEGIN,
        MEMCG_END,
        SHRINK,
    ];
    let oracle = TraceInstance::new(
        "global",
        &events.map(|event| {
            let filter = if event == KSWAPD_WAKE {
                String::new()
            } else {
                not_memtrace.clone()
            };
            (event, filter)
        }),
    );
    let slow_kswapd = SlowKswapd::new();
    for reader in &mut workloads {
        reader.go();
    }
    for reader in workloads {
        assert_eq!(reader.record()["bytes_read"], mib << 20);
    }
    drop(slow_kswapd);
    // End with nothing in reclaim, then close the oracle's window before memtrace's: memory
    // left full of page cache kept kswapd balancing, and any allocation could stall, across the
    // window's end (a stall begun and not ended, a scan one side counts and the other not).
    quiet_reclaim();
    oracle.stop();
    memtrace.interrupt();
    let output = memtrace.finish();
    // Give the page cache back to the rest of the test run.
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "1");
    assert!(output.status.success(), "{}", output.stderr);
    let seen = count(&oracle.lines());
    eprintln!("tracefs: {seen:?}");
    assert!(
        seen.kswapd_wakes > 0 && seen.direct.0 > 0,
        "{readers} readers of {mib} MiB should wake kswapd and stall: {seen:?}"
    );
    assert_eq!(seen.direct.0, seen.direct.1, "unpaired direct stalls");

    let summary = output.lines.last().expect("output");
    assert_eq!(summary["type"], "reclaim_summary", "{summary}");
    let direct = &summary["stalls"]["direct"];
    assert_eq!(direct["count"], seen.direct.0, "{direct}");
    assert_eq!(direct["nr_reclaimed"], seen.direct_reclaimed, "{direct}");
    let memcg = summary["stalls"]["memcg"]["count"].as_u64().unwrap_or(0);
    assert_eq!(memcg, seen.memcg);
    let kswapd = &summary["kswapd"];
    let wakes: u64 = kswapd["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["wakes"].as_u64().unwrap())
        .sum();
    assert_eq!(wakes, seen.kswapd_wakes, "{kswapd}");
    assert_eq!(scan(&kswapd["lru_inactive_in_stalls"]), seen.in_stalls);
    assert_eq!(scan(&kswapd["lru_inactive_background"]), seen.background);
    direct_stacks_match(summary, &reader_pids, &seen);
}

/// `--stacks`: each reader's direct stalls, counted per stack, add up to the oracle's count of
/// that reader's stalls and pages reclaimed, each under a kernel stack that runs through
/// direct reclaim and a user stack (the reader's read()).
fn direct_stacks_match(summary: &Value, readers: &[u32], seen: &Counts) {
    let mut stalled_readers = 0;
    for &pid in readers {
        let oracle = seen.direct_by_task.get(&pid).copied().unwrap_or_default();
        let process = summary["processes"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["pid"] == pid));
        let Some(process) = process else {
            assert_eq!(oracle, (0, 0), "reader {pid} stalled but is not listed");
            continue;
        };
        let stacks = &process["stacks"];
        assert_eq!(stacks["others"], 0, "every stack shown: {stacks:#}");
        let direct: Vec<&Value> = stacks["top"]
            .as_array()
            .expect("stacks")
            .iter()
            .filter(|s| s["call"] == "direct_reclaim")
            .collect();
        let sum =
            |field: &str| -> u64 { direct.iter().map(|s| s[field].as_u64().unwrap_or(0)).sum() };
        assert_eq!(
            (sum("calls"), sum("reclaimed_pages")),
            oracle,
            "reader {pid}: {stacks:#}"
        );
        for stack in &direct {
            let kernel = stack["kernel"]["frames"].as_array().expect("kernel frames");
            assert!(
                kernel.iter().any(|f| f["function"] == "try_to_free_pages"),
                "{kernel:#?}"
            );
            let user = stack["user"]["frames"].as_array().expect("user frames");
            assert!(!user.is_empty(), "{stack}");
        }
        stalled_readers += u64::from(oracle.0 > 0);
    }
    assert!(
        stalled_readers > 0,
        "no reader stalled in direct reclaim: {seen:?}"
    );
}
