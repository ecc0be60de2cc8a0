//! How reclaim reads: OOM kills, bcc-style stall histograms, per-interval lines (like
//! vmscan.bt's, but per process) and the `memtrace reclaim` final report.

use std::fmt::Write as _;

use memtrace_common::events::stall::{ReclaimKind, STALL_BUCKETS};

use super::placement;
use crate::{
    analysis::{
        ByName,
        process::StallView,
        snapshot::{KswapdView, ScanView, Snapshot},
    },
    model::{
        event::CgroupOf,
        reclaim::{Interval, StallStats, bucket_bounds},
    },
    stop::StopReason,
    units::{human_bytes, ms, secs},
};

fn opt_kb(kb: Option<u64>) -> String {
    kb.map_or_else(|| "?".to_owned(), |kb| human_bytes(kb * 1024))
}

/// The OOM kills, loud: they matter whoever they hit.
pub fn oom_text(out: &mut String, snapshot: &Snapshot) {
    let earlier = snapshot
        .oom_kills_total
        .saturating_sub(snapshot.oom_kills.len() as u64);
    if earlier > 0 {
        let _ = writeln!(
            out,
            "\n!!! {} OOM kills in all; the {} most recent follow",
            snapshot.oom_kills_total,
            snapshot.oom_kills.len()
        );
    }
    for o in &snapshot.oom_kills {
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
        let mut notes = placement::placement_notes(o.container.as_ref(), o.pod.as_ref());
        if o.cgroup_of == Some(CgroupOf::Trigger) {
            notes.push("of the triggering task".to_owned());
        }
        let cgroup = match &o.cgroup {
            Some(path) if notes.is_empty() => path.clone(),
            Some(path) => format!("{path} ({})", notes.join(", ")),
            None => "unknown (gone before memtrace looked)".to_owned(),
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
fn stalls_text(out: &mut String, kind: ReclaimKind, s: &StallView, indent: &str) {
    let pct = |p: Option<u64>| p.map_or_else(|| "-".to_owned(), |us| format!("≤{us} µs"));
    let _ = writeln!(
        out,
        "{indent}{} reclaim: {} stalls, {:.3} ms total, max {:.3} ms, p50 {}, p99 {}; {} pages reclaimed, {} scanned",
        kind.name(),
        s.count,
        ms(s.total_ns),
        ms(s.max_ns),
        pct(s.p50_us),
        pct(s.p99_us),
        s.nr_reclaimed,
        s.nr_scanned
    );
    out.push_str(&histogram_text(&s.stats, indent));
}

/// Every kind with stalls, one after the other.
pub fn process_stalls_text(out: &mut String, stalls: &ByName<ReclaimKind, Option<StallView>>) {
    for (kind, s) in stalls.iter() {
        if let Some(s) = s {
            stalls_text(out, kind, s, "  ");
        }
    }
}

/// The histogram as bcc prints it: `usecs : count distribution` with `|****|` bars, from the
/// first to the last non-empty bucket.
pub fn histogram_text(stats: &StallStats, indent: &str) -> String {
    let mut out = String::new();
    let used: Vec<usize> = (0..STALL_BUCKETS)
        .filter(|&b| stats.buckets[b] > 0)
        .collect();
    let (Some(&first), Some(&last)) = (used.first(), used.last()) else {
        return out;
    };
    let peak = stats.buckets.iter().copied().max().unwrap_or(1).max(1);
    let _ = writeln!(out, "{indent}{:>20} : {:<8} distribution", "usecs", "count");
    for bucket in first.max(1)..=last {
        let (low, high) = bucket_bounds(bucket);
        let n = stats.buckets[bucket];
        let stars = usize::try_from(n * 40 / peak).unwrap_or(40);
        let _ = writeln!(
            out,
            "{indent}{:>10} -> {:<7} : {:<8} |{:<40}|",
            low,
            high,
            n,
            "*".repeat(stars)
        );
    }
    out
}

/// Lines for one interval: a row per process and kind with stalls in it.
pub fn interval_text(
    clock: &str,
    interval: &Interval,
    comm: impl Fn(u32) -> Option<String>,
) -> String {
    let mut out = String::new();
    let wakes = interval.kswapd_wakes;
    if interval.stalls.is_empty() {
        let _ = writeln!(out, "{clock}  no reclaim stalls; kswapd wakes {wakes}");
        return out;
    }
    let _ = writeln!(
        out,
        "{clock}  {:>7} {:<16} {:<6} {:>7} {:>10} {:>10} {:>10}",
        "PID", "COMM", "KIND", "STALLS", "TOTAL_ms", "MAX_ms", "RECLAIMED"
    );
    for (&(pid, kind), s) in &interval.stalls {
        let comm = comm(pid).unwrap_or_else(|| "?".to_owned());
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
    if wakes > 0 {
        let _ = writeln!(out, "{clock}  kswapd wakes {wakes}");
    }
    out
}

/// The `memtrace reclaim` final report.
pub fn report(snapshot: &Snapshot, stop_reason: StopReason) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "memtrace reclaim report: {:.1} s traced ({})",
        secs(snapshot.elapsed_ns),
        stop_reason.describe()
    );
    oom_text(&mut out, snapshot);
    let scope = if snapshot.system_wide {
        "all processes"
    } else {
        "traced processes"
    };
    let _ = writeln!(out, "\nReclaim stalls ({scope}):");
    let before = out.len();
    process_stalls_text(&mut out, &snapshot.system_stalls);
    if out.len() == before {
        let _ = writeln!(out, "  none");
    }
    for p in &snapshot.stalled {
        if p.stalls.iter().any(|(_, s)| s.is_some()) {
            let _ = writeln!(
                out,
                "\npid {} ({})",
                p.pid,
                p.comm.as_deref().unwrap_or("?")
            );
            process_stalls_text(&mut out, &p.stalls);
            if let Some(stacks) = &p.stacks {
                super::stacks::stacks_text(&mut out, stacks, "by time stalled, then by stalls");
            }
        }
    }
    for p in &snapshot.stalled {
        let Some(lazy) = p.lazy_free else { continue };
        if let (Some(first), Some(peak), Some(last)) = (lazy.first, lazy.peak, lazy.last)
            && peak > 0
        {
            let _ = writeln!(
                out,
                "\npid {}: LazyFree {} at start, {} at peak, {} at end: {} dropped (reclaimed, or written again)",
                p.pid,
                human_bytes(first),
                human_bytes(peak),
                human_bytes(last),
                human_bytes(peak.saturating_sub(last))
            );
        }
    }
    kswapd_text(&mut out, &snapshot.kswapd);
    vmstat_text(&mut out, snapshot);
    if snapshot.lost.total() > 0 {
        let _ = writeln!(
            out,
            "\nlost in the kernel: {}",
            super::lost::lost_summary(&snapshot.lost)
        );
    }
    out
}

fn kswapd_text(out: &mut String, k: &KswapdView) {
    let _ = writeln!(out, "\nkswapd:");
    if k.nodes.is_empty() {
        let _ = writeln!(out, "  did not run");
    }
    for n in &k.nodes {
        let _ = writeln!(
            out,
            "  node {}: {} active periods ({} wakes), {:.3} ms active, longest {:.3} ms{}",
            n.nid,
            n.periods,
            n.wakes,
            ms(n.active_ns),
            ms(n.longest_ns),
            if n.awake_at_end { "; still awake" } else { "" }
        );
    }
    if !k.wakeups_by.is_empty() {
        let _ = writeln!(out, "  woken by (requests):");
        for w in k.wakeups_by.iter().take(10) {
            let _ = writeln!(out, "    pid {:>7} {:<16} {}", w.pid, w.comm, w.count);
        }
    }
    let scan = |label: &str, c: &ScanView, out: &mut String| {
        let _ = writeln!(
            out,
            "  inactive LRU {label}: {} pages scanned, {} reclaimed",
            c.nr_scanned, c.nr_reclaimed
        );
    };
    scan("in stalls", &k.lru_inactive_in_stalls, out);
    scan("background", &k.lru_inactive_background, out);
}

fn vmstat_text(out: &mut String, snapshot: &Snapshot) {
    let changed: Vec<(&String, &i64)> = snapshot
        .vmstat_delta
        .iter()
        .filter(|(_, d)| **d != 0)
        .collect();
    let _ = writeln!(out, "\n/proc/vmstat over the window:");
    if changed.is_empty() {
        let _ = writeln!(out, "  no reclaim counter changed");
    }
    for (name, d) in changed {
        let _ = writeln!(out, "  {name:<28} {d:+}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analysis::{selection::Selection, snapshot::Window},
        model::{
            Model,
            event::{OomKill, ReaperOutcome},
        },
    };

    fn stats(latencies_us: &[u64]) -> StallStats {
        let mut s = StallStats::default();
        for &us in latencies_us {
            s.add(us * 1000, 10, 20);
        }
        s
    }

    #[test]
    fn histogram_looks_like_bcc() {
        let mut s = StallStats::default();
        s.add(3_000, 0, 0);
        s.add(3_000, 0, 0);
        s.add(9_000, 0, 0);
        // Golden: bcc's layout, bars scaled to the largest bucket, empty buckets in between kept.
        assert_eq!(
            histogram_text(&s, ""),
            "               usecs : count    distribution\n\
             \x20        2 -> 3       : 2        |****************************************|\n\
             \x20        4 -> 7       : 0        |                                        |\n\
             \x20        8 -> 15      : 1        |********************                    |\n"
        );
    }

    #[test]
    fn report_shows_oom_first_and_stalls_per_process() {
        let mut model = Model::default();
        model.reclaim.ooms.push(OomKill {
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
            cgroup_of: Some(CgroupOf::Victim),
            container: None,
            pod: None,
            trigger_memcg_id: None,
            reaper: ReaperOutcome {
                start_ns: Some(10),
                finish_ns: Some(2_000_010),
                ..Default::default()
            },
        });
        model
            .reclaim
            .stalls
            .insert((7, ReclaimKind::Memcg), stats(&[10, 12, 300]));
        model
            .reclaim
            .system
            .insert(ReclaimKind::Memcg, stats(&[10, 12, 300]));
        model.attribution.name(7, "cat");
        let snapshot = Snapshot::new(
            &model,
            &Selection::default(),
            Window {
                elapsed_ns: 2_000_000_000,
                system_wide: true,
                ..Window::default()
            },
        );
        let text = report(&snapshot, StopReason::Duration);
        let oom = text.find("!!! OOM KILL: pid 42 (hog)").expect(&text);
        let stalls = text.find("pid 7 (cat)").expect(&text);
        assert!(oom < stalls, "{text}");
        assert!(
            text.contains("memory cgroup /small; triggered by pid 42 (hog)"),
            "{text}"
        );
        assert!(text.contains("memcg reclaim: 3 stalls"), "{text}");
        assert!(text.contains("usecs : count"), "{text}");
        let line = crate::output::json::ReclaimSummary::line(&snapshot, StopReason::Duration);
        let json: serde_json::Value = serde_json::from_str(&line.to_json()).unwrap();
        assert_eq!(json["oom_kills"][0]["type"], "oom_kill");
        assert_eq!(json["oom_kills"][0]["pid"], 42);
        assert_eq!(json["oom_kills"][0]["anon_rss_kb"], 101_000);
        assert_eq!(json["oom_kills"][0]["cgroup_of"], "victim");
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
        let interval = Interval {
            stalls: std::collections::BTreeMap::from([
                ((7, ReclaimKind::Memcg), stats(&[10, 20])),
                ((9, ReclaimKind::Direct), stats(&[1000])),
            ]),
            kswapd_wakes: 2,
        };
        let comm = |pid| (pid == 7).then(|| "cat".to_owned());
        let text = interval_text("12:00:01", &interval, comm);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[1].contains("cat") && lines[1].contains("memcg"),
            "{text}"
        );
        assert!(lines[2].contains("  9 ?"), "{text}");
        assert!(lines[3].ends_with("kswapd wakes 2"));
        let line = crate::output::json::Line::ReclaimInterval(
            crate::output::json::IntervalLine::new(&interval, 5, comm),
        );
        let json: serde_json::Value = serde_json::from_str(&line.to_json()).unwrap();
        assert_eq!(json["stalls"][0]["count"], 2);
        assert_eq!(json["stalls"][0]["comm"], "cat");
        assert_eq!(json["stalls"][1]["total_ns"], 1_000_000);
    }
}
