//! How reclaim is printed: stall and OOM events as JSON, bcc-style histograms, per-interval
//! lines (like vmscan.bt's, but per process) and the `memtrace reclaim` final report.

use std::{collections::BTreeMap, fmt::Write as _};

use memtrace_common::reclaim::{ReaperPhase, ReclaimKind, ScanCounts};
use serde::Serialize;
use serde_json::json;

use crate::{
    events::{Kswapd, OomKill, OomReaper, Stall},
    gfp::GfpNames,
    procfs::SmapsRollup,
    reclaim::{KswapdNode, Reclaim, StallStats},
    report::{StopReason, human_bytes},
    tracer::LostCounts,
};

pub const KINDS: [ReclaimKind; 2] = [ReclaimKind::Direct, ReclaimKind::Memcg];

pub fn stall_json(s: &Stall, gfp: &GfpNames) -> serde_json::Value {
    json!({
        "type": "reclaim_stall",
        "pid": s.tgid,
        "tid": s.tid,
        "comm": s.thread_comm,
        "kind": s.kind.name(),
        "order": s.order,
        "gfp_flags": s.gfp_flags,
        "gfp": gfp.name(s.gfp_flags),
        "ts_ns": s.start_ns,
        "latency_ns": s.latency_ns,
        "nr_reclaimed": s.nr_reclaimed,
        "nr_scanned": s.nr_scanned,
    })
}

pub fn oom_json(o: &OomKill) -> serde_json::Value {
    json!({
        "type": "oom_kill",
        "pid": o.pid,
        "tid": o.tid,
        "comm": o.comm,
        "ts_ns": o.ts_ns,
        "total_vm_kb": o.total_vm_kb,
        "anon_rss_kb": o.anon_rss_kb,
        "file_rss_kb": o.file_rss_kb,
        "shmem_rss_kb": o.shmem_rss_kb,
        "pgtables_kb": o.pgtables_kb,
        "uid": o.uid,
        "oom_score_adj": o.oom_score_adj,
        "cgroup": o.cgroup,
        "cgroup_of": o.cgroup_of,
        "trigger_memcg_id": o.trigger_memcg_id,
        "reaper": {
            "woken": o.reaper.woken_ns.is_some(),
            "skipped": o.reaper.skipped_ns.is_some(),
            "reaped": o.reaper.finish_ns.is_some(),
            "reap_ns": o.reaper.reap_ns(),
        },
        "trigger_pid": o.trigger_pid,
        "trigger_tid": o.trigger_tid,
        "trigger_comm": o.trigger_comm,
    })
}

pub fn reaper_json(r: &OomReaper) -> serde_json::Value {
    json!({
        "type": "oom_reaper",
        "pid": r.pid,
        "phase": match r.phase {
            ReaperPhase::Woken => "woken",
            ReaperPhase::Start => "start",
            ReaperPhase::Finish => "finish",
            ReaperPhase::Skip => "skip",
        },
        "ts_ns": r.ts_ns,
    })
}

pub fn kswapd_json(k: &Kswapd) -> serde_json::Value {
    json!({
        "type": if k.awake { "kswapd_wake" } else { "kswapd_sleep" },
        "nid": k.nid,
        "order": (k.awake).then_some(k.order),
        "ts_ns": k.ts_ns,
    })
}

/// Stall totals of one process or of the system, in one kind of reclaim.
#[derive(Serialize)]
pub struct StallJson {
    count: u64,
    total_ns: u64,
    max_ns: u64,
    mean_ns: u64,
    /// Upper bounds from the log2 histogram, in microseconds.
    p50_us: Option<u64>,
    p99_us: Option<u64>,
    nr_reclaimed: u64,
    nr_scanned: u64,
    /// `[low_us, high_us, count]` for each non-empty log2 bucket.
    histogram_us: Vec<[u64; 3]>,
}

impl From<&StallStats> for StallJson {
    fn from(s: &StallStats) -> Self {
        Self {
            count: s.count,
            total_ns: s.total_ns,
            max_ns: s.max_ns,
            mean_ns: s.mean_ns(),
            p50_us: s.percentile_us(50.0),
            p99_us: s.percentile_us(99.0),
            nr_reclaimed: s.nr_reclaimed,
            nr_scanned: s.nr_scanned,
            histogram_us: s
                .buckets
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(b, &n)| {
                    let (low, high) = crate::reclaim::bucket_bounds(b);
                    [low, high, n]
                })
                .collect(),
        }
    }
}

/// `{"direct": {...}|null, "memcg": {...}|null}` for one process.
pub fn process_stalls_json(
    reclaim: &Reclaim,
    pid: u32,
) -> BTreeMap<&'static str, Option<StallJson>> {
    KINDS
        .iter()
        .map(|&kind| (kind.name(), reclaim.of(pid, kind).map(StallJson::from)))
        .collect()
}

pub fn oom_kills_json(reclaim: &Reclaim) -> Vec<serde_json::Value> {
    reclaim.ooms.iter().map(oom_json).collect()
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn opt_kb(kb: Option<u64>) -> String {
    kb.map_or_else(|| "?".to_owned(), |kb| human_bytes(kb * 1024))
}

/// The OOM kills, loud: they matter whoever they hit.
pub fn oom_text(out: &mut String, reclaim: &Reclaim) {
    for o in &reclaim.ooms {
        let _ = writeln!(
            out,
            "\n!!! OOM KILL: pid {} ({}) killed by the OOM killer",
            o.pid, o.comm
        );
        let _ = writeln!(
            out,
            "    at death: anon {}, file {}, shmem {} resident; {} virtual; oom_score_adj {}",
            opt_kb(o.anon_rss_kb),
            opt_kb(o.file_rss_kb),
            opt_kb(o.shmem_rss_kb),
            opt_kb(o.total_vm_kb),
            o.oom_score_adj
                .map_or_else(|| "?".to_owned(), |a| a.to_string())
        );
        let cgroup = match (&o.cgroup, o.cgroup_of) {
            (Some(path), Some("trigger")) => format!("{path} (of the triggering task)"),
            (Some(path), _) => path.clone(),
            (None, _) => "unknown (gone before memtrace looked)".to_owned(),
        };
        let _ = writeln!(
            out,
            "    memory cgroup {cgroup}; triggered by pid {} ({})",
            o.trigger_pid, o.trigger_comm
        );
        if let Some(ns) = o.reaper.reap_ns() {
            let _ = writeln!(
                out,
                "    the OOM reaper freed its memory in {:.3} ms",
                ms(ns)
            );
        } else if o.reaper.skipped_ns.is_some() {
            let _ = writeln!(out, "    the OOM reaper had nothing left to reap");
        }
    }
}

/// One process's (or the system's) stalls of one kind, with its histogram.
pub fn stalls_text(out: &mut String, label: &str, s: &StallStats, indent: &str) {
    let pct = |p| {
        s.percentile_us(p)
            .map_or_else(|| "-".to_owned(), |us| format!("≤{us} µs"))
    };
    let _ = writeln!(
        out,
        "{indent}{label}: {} stalls, {:.3} ms total, max {:.3} ms, p50 {}, p99 {}; {} pages reclaimed, {} scanned",
        s.count,
        ms(s.total_ns),
        ms(s.max_ns),
        pct(50.0),
        pct(99.0),
        s.nr_reclaimed,
        s.nr_scanned
    );
    out.push_str(&s.histogram_text(indent));
}

/// The stalls part of a process's section in the default report.
pub fn process_stalls_text(out: &mut String, reclaim: &Reclaim, pid: u32) {
    for kind in KINDS {
        if let Some(s) = reclaim.of(pid, kind) {
            stalls_text(out, &format!("{} reclaim", kind.name()), s, "  ");
        }
    }
}

/// Lines for one interval: a row per process and kind with stalls in it, like vmscan.bt's
/// per-second lines but per process.
pub fn interval_text(
    clock: &str,
    interval: &BTreeMap<(u32, ReclaimKind), StallStats>,
    comms: &BTreeMap<u32, String>,
    kswapd_wakes: u64,
) -> String {
    let mut out = String::new();
    if interval.is_empty() {
        let _ = writeln!(
            out,
            "{clock}  no reclaim stalls; kswapd wakes {kswapd_wakes}"
        );
        return out;
    }
    let _ = writeln!(
        out,
        "{clock}  {:>7} {:<16} {:<6} {:>7} {:>10} {:>10} {:>10}",
        "PID", "COMM", "KIND", "STALLS", "TOTAL_ms", "MAX_ms", "RECLAIMED"
    );
    for (&(pid, kind), s) in interval {
        let comm = comms.get(&pid).map_or("?", String::as_str);
        let _ = writeln!(
            out,
            "{clock}  {pid:>7} {comm:<16} {:<6} {:>7} {:>10.3} {:>10.3} {:>10}",
            kind.name(),
            s.count,
            ms(s.total_ns),
            ms(s.max_ns),
            s.nr_reclaimed
        );
    }
    if kswapd_wakes > 0 {
        let _ = writeln!(out, "{clock}  kswapd wakes {kswapd_wakes}");
    }
    out
}

pub fn interval_json(
    interval: &BTreeMap<(u32, ReclaimKind), StallStats>,
    comms: &BTreeMap<u32, String>,
    elapsed_ns: u64,
    kswapd_wakes: u64,
) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = interval
        .iter()
        .map(|(&(pid, kind), s)| {
            json!({
                "pid": pid,
                "comm": comms.get(&pid),
                "kind": kind.name(),
                "count": s.count,
                "total_ns": s.total_ns,
                "max_ns": s.max_ns,
                "nr_reclaimed": s.nr_reclaimed,
            })
        })
        .collect();
    json!({
        "type": "reclaim_interval",
        "elapsed_ns": elapsed_ns,
        "stalls": rows,
        "kswapd_wakes": kswapd_wakes,
    })
}

/// LazyFree (MADV_FREE'd pages still resident) of a `--pid` target, from smaps_rollup sampled
/// at the start, every interval and at the end: a drop means reclaim took them (or the
/// process wrote to them again).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LazyFree {
    pub pid: u32,
    pub first: Option<u64>,
    pub peak: Option<u64>,
    pub last: Option<u64>,
}

impl LazyFree {
    pub fn sample(&mut self, sample: Option<&SmapsRollup>) {
        let Some(lazy) = sample.map(|s| s.lazy_free) else {
            return;
        };
        self.first.get_or_insert(lazy);
        self.peak = Some(self.peak.map_or(lazy, |p| p.max(lazy)));
        self.last = Some(lazy);
    }
}

/// What the final reclaim report covers.
pub struct ReclaimWindow<'a> {
    pub reclaim: &'a Reclaim,
    pub kswapd: BTreeMap<u32, KswapdNode>,
    /// LazyFree of the `--pid` targets.
    pub targets: &'a [LazyFree],
    pub system_wide: bool,
    pub lost: &'a LostCounts,
    pub duration_ns: u64,
    pub stop_reason: StopReason,
}

fn comm_of<'a>(w: &'a ReclaimWindow, pid: u32) -> &'a str {
    w.reclaim.comms.get(&pid).map_or("?", String::as_str)
}

/// Processes with stalls, most total stall time first.
fn stalled_pids(reclaim: &Reclaim) -> Vec<u32> {
    let mut totals: BTreeMap<u32, u64> = BTreeMap::new();
    for (&(pid, _), s) in &reclaim.stalls {
        *totals.entry(pid).or_default() += s.total_ns;
    }
    let mut pids: Vec<(u32, u64)> = totals.into_iter().filter(|(_, t)| *t > 0).collect();
    pids.sort_by_key(|&(pid, total)| (std::cmp::Reverse(total), pid));
    pids.into_iter().map(|(pid, _)| pid).collect()
}

pub fn text(w: &ReclaimWindow) -> String {
    let mut out = String::new();
    let why = match w.stop_reason {
        StopReason::Interrupted => "interrupted",
        StopReason::Duration => "duration reached",
        StopReason::TargetExited => "traced process exited",
        StopReason::OutputClosed => "output closed",
        // `memtrace go` only; never the reason here.
        StopReason::ReleaseSeen => "releases seen",
    };
    let _ = writeln!(
        out,
        "memtrace reclaim report: {:.1} s traced ({why})",
        w.duration_ns as f64 / 1e9
    );
    oom_text(&mut out, w.reclaim);

    let scope = if w.system_wide {
        "all processes"
    } else {
        "traced processes"
    };
    let _ = writeln!(out, "\nReclaim stalls ({scope}):");
    let mut any = false;
    for kind in KINDS {
        if let Some(s) = w.reclaim.system.get(&kind).filter(|s| s.count > 0) {
            any = true;
            stalls_text(&mut out, &format!("{} reclaim", kind.name()), s, "  ");
        }
    }
    if !any {
        let _ = writeln!(out, "  none");
    }
    for pid in stalled_pids(w.reclaim) {
        let _ = writeln!(out, "\npid {pid} ({})", comm_of(w, pid));
        process_stalls_text(&mut out, w.reclaim, pid);
    }
    for t in w.targets {
        if let (Some(first), Some(peak), Some(last)) = (t.first, t.peak, t.last)
            && peak > 0
        {
            let _ = writeln!(
                out,
                "\npid {}: LazyFree {} at start, {} at peak, {} at end: {} dropped (reclaimed, or written again)",
                t.pid,
                human_bytes(first),
                human_bytes(peak),
                human_bytes(last),
                human_bytes(peak.saturating_sub(last))
            );
        }
    }
    kswapd_text(&mut out, w);
    vmstat_text(&mut out, w.reclaim);
    if w.lost.total() > 0 {
        let _ = writeln!(out, "\nlost in the kernel: {} records", w.lost.total());
    }
    out
}

fn kswapd_text(out: &mut String, w: &ReclaimWindow) {
    let _ = writeln!(out, "\nkswapd:");
    if w.kswapd.is_empty() {
        let _ = writeln!(out, "  did not run");
    }
    for (nid, n) in &w.kswapd {
        let _ = writeln!(
            out,
            "  node {nid}: {} active periods ({} wakes), {:.3} ms active, longest {:.3} ms{}",
            n.periods,
            n.wakes,
            ms(n.active_ns),
            ms(n.longest_ns),
            if n.awake_since.is_some() {
                "; still awake"
            } else {
                ""
            }
        );
    }
    let mut wakers: Vec<(&u32, &crate::reclaim::Wakeups)> = w.reclaim.wakeups.iter().collect();
    wakers.sort_by_key(|(pid, wk)| (std::cmp::Reverse(wk.count), **pid));
    if !wakers.is_empty() {
        let _ = writeln!(out, "  woken by (requests):");
        for (pid, wk) in wakers.iter().take(10) {
            let _ = writeln!(out, "    pid {pid:>7} {:<16} {}", wk.comm, wk.count);
        }
    }
    let scan = |label: &str, c: &ScanCounts, out: &mut String| {
        let _ = writeln!(
            out,
            "  inactive LRU {label}: {} pages scanned, {} reclaimed",
            c.nr_scanned, c.nr_reclaimed
        );
    };
    scan("in stalls", &w.reclaim.scan_in_stalls, out);
    scan("background", &w.reclaim.scan_background, out);
}

fn vmstat_text(out: &mut String, reclaim: &Reclaim) {
    let delta = reclaim.vmstat_delta();
    let changed: Vec<(&String, &i64)> = delta.iter().filter(|(_, d)| **d != 0).collect();
    let _ = writeln!(out, "\n/proc/vmstat over the window:");
    if changed.is_empty() {
        let _ = writeln!(out, "  no reclaim counter changed");
    }
    for (name, d) in changed {
        let _ = writeln!(out, "  {name:<28} {d:+}");
    }
}

#[derive(Serialize)]
struct KswapdJson {
    nid: u32,
    periods: u64,
    wakes: u64,
    active_ns: u64,
    longest_ns: u64,
    awake_at_end: bool,
}

pub fn summary_json(w: &ReclaimWindow) -> serde_json::Value {
    let processes: Vec<serde_json::Value> = stalled_pids(w.reclaim)
        .into_iter()
        .chain(
            w.targets
                .iter()
                .map(|t| t.pid)
                .filter(|pid| !w.reclaim.stalls.keys().any(|(p, _)| p == pid)),
        )
        .map(|pid| {
            let lazy = w.targets.iter().find(|t| t.pid == pid);
            json!({
                "pid": pid,
                "comm": w.reclaim.comms.get(&pid),
                "stalls": process_stalls_json(w.reclaim, pid),
                "lazy_free": lazy.map(|t| json!({
                    "first": t.first,
                    "peak": t.peak,
                    "last": t.last,
                    "dropped": t.peak.zip(t.last).map(|(p, l)| p.saturating_sub(l)),
                })),
            })
        })
        .collect();
    let system: BTreeMap<&str, Option<StallJson>> = KINDS
        .iter()
        .map(|&kind| {
            (
                kind.name(),
                w.reclaim.system.get(&kind).map(StallJson::from),
            )
        })
        .collect();
    let kswapd: Vec<KswapdJson> = w
        .kswapd
        .iter()
        .map(|(&nid, n)| KswapdJson {
            nid,
            periods: n.periods,
            wakes: n.wakes,
            active_ns: n.active_ns,
            longest_ns: n.longest_ns,
            awake_at_end: n.awake_since.is_some(),
        })
        .collect();
    let wakeups: Vec<serde_json::Value> = w
        .reclaim
        .wakeups
        .iter()
        .map(|(pid, wk)| json!({ "pid": pid, "comm": wk.comm, "count": wk.count }))
        .collect();
    let scan =
        |c: &ScanCounts| json!({ "nr_scanned": c.nr_scanned, "nr_reclaimed": c.nr_reclaimed });
    json!({
        "type": "reclaim_summary",
        "schema": crate::report::SCHEMA,
        "duration_ns": w.duration_ns,
        "stop_reason": w.stop_reason,
        "system_wide": w.system_wide,
        "lost": w.lost.total(),
        "oom_kills": oom_kills_json(w.reclaim),
        "stalls": system,
        "processes": processes,
        "kswapd": {
            "nodes": kswapd,
            "wakeups_by": wakeups,
            "lru_inactive_in_stalls": scan(&w.reclaim.scan_in_stalls),
            "lru_inactive_background": scan(&w.reclaim.scan_background),
        },
        "vmstat_delta": w.reclaim.vmstat_delta(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(latencies_us: &[u64]) -> StallStats {
        let mut s = StallStats::default();
        for &us in latencies_us {
            s.add(us * 1000, 10, 20);
        }
        s
    }

    #[test]
    fn report_shows_oom_first_and_stalls_per_process() {
        let mut reclaim = Reclaim::default();
        reclaim.ooms.push(OomKill {
            pid: 42,
            tid: 42,
            comm: "hog".into(),
            trigger_pid: 42,
            trigger_tid: 42,
            trigger_comm: "hog".into(),
            uid: Some(0),
            oom_score_adj: Some(0),
            total_vm_kb: Some(110_000),
            anon_rss_kb: Some(101_000),
            file_rss_kb: Some(900),
            shmem_rss_kb: Some(0),
            pgtables_kb: Some(250),
            ts_ns: 1,
            cgroup: Some("/small".into()),
            cgroup_of: Some("victim"),
            trigger_memcg_id: None,
            reaper: crate::events::ReaperOutcome {
                start_ns: Some(10),
                finish_ns: Some(2_000_010),
                ..Default::default()
            },
        });
        reclaim
            .stalls
            .insert((7, ReclaimKind::Memcg), stats(&[10, 12, 300]));
        reclaim
            .system
            .insert(ReclaimKind::Memcg, stats(&[10, 12, 300]));
        reclaim.comms.insert(7, "cat".into());
        let lost = LostCounts::default();
        let w = ReclaimWindow {
            reclaim: &reclaim,
            kswapd: BTreeMap::new(),
            targets: &[],
            system_wide: true,
            lost: &lost,
            duration_ns: 2_000_000_000,
            stop_reason: StopReason::Duration,
        };
        let text = text(&w);
        let oom = text.find("!!! OOM KILL: pid 42 (hog)").expect(&text);
        let stalls = text.find("pid 7 (cat)").expect(&text);
        assert!(oom < stalls, "{text}");
        assert!(
            text.contains("memory cgroup /small; triggered by pid 42 (hog)"),
            "{text}"
        );
        assert!(text.contains("memcg reclaim: 3 stalls"), "{text}");
        assert!(text.contains("usecs : count"), "{text}");
        let json = summary_json(&w);
        assert_eq!(json["oom_kills"][0]["pid"], 42);
        assert_eq!(json["oom_kills"][0]["anon_rss_kb"], 101_000);
        assert_eq!(json["processes"][0]["stalls"]["memcg"]["count"], 3);
        assert_eq!(json["processes"][0]["stalls"]["memcg"]["nr_reclaimed"], 30);
        assert_eq!(json["processes"][0]["stalls"]["memcg"]["p99_us"], 300);
        assert_eq!(
            json["processes"][0]["stalls"]["direct"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn interval_lines_per_process() {
        let interval = BTreeMap::from([
            ((7, ReclaimKind::Memcg), stats(&[10, 20])),
            ((9, ReclaimKind::Direct), stats(&[1000])),
        ]);
        let comms = BTreeMap::from([(7, "cat".to_owned())]);
        let text = interval_text("12:00:01", &interval, &comms, 2);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[1].contains("cat") && lines[1].contains("memcg"),
            "{text}"
        );
        assert!(lines[2].contains("  9 ?"), "{text}");
        assert!(lines[3].ends_with("kswapd wakes 2"));
        let json = interval_json(&interval, &comms, 5, 2);
        assert_eq!(json["stalls"][0]["count"], 2);
        assert_eq!(json["stalls"][1]["total_ns"], 1_000_000);
    }
}
