//! The final report people read, for the default mode and `memtrace go`'s section of it.

use std::fmt::Write as _;

use super::{groups, lost::lost_text, placement::placement_notes, reclaim, stacks, verdict};
use crate::{
    analysis::{
        process::{MappingsView, ProcessView},
        snapshot::Snapshot,
    },
    stop::StopReason,
    units::{human_bytes, secs, signed_bytes},
};

/// The report: OOM kills, then each process (the first `top`), the Go verdicts, and the
/// lost-events line that always ends it.
pub fn report(snapshot: &Snapshot, stop_reason: StopReason, top: Option<usize>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "memtrace report: {:.1} s traced ({})",
        secs(snapshot.elapsed_ns),
        stop_reason.describe()
    );
    reclaim::oom_text(&mut out, snapshot);
    let processes = &snapshot.processes;
    // Grouped (--by): the groups take the processes' place.
    let grouped = !snapshot.groups.is_empty();
    if grouped {
        groups::text(&mut out, &snapshot.groups, top);
    }
    let shown = match grouped {
        true => 0,
        false => top.unwrap_or(usize::MAX).min(processes.len()),
    };
    for p in &processes[..shown] {
        out.push('\n');
        process_text(&mut out, p, snapshot.counts_user_faults);
        reclaim::process_stalls_text(&mut out, &p.reclaim);
        explanation_text(&mut out, &p.explanation);
    }
    if shown < processes.len() && !grouped {
        let more = processes.len() - shown;
        let _ = writeln!(
            out,
            "\n… and {more} more processes (see --top, --sort, --comm, or --json)"
        );
    }
    if !snapshot.unattributed.is_empty() {
        let calls: u64 = snapshot.unattributed.iter().map(|a| a.calls).sum();
        let _ = writeln!(
            out,
            "\nprocess_madvise calls whose target could not be resolved: {calls} (not charged to any process)"
        );
    }
    if let Some(why) = &snapshot.taken_withheld {
        let _ = writeln!(out, "\n{why}");
    }
    if snapshot.system_wide {
        totals_text(&mut out, snapshot);
    }
    for v in &snapshot.go_verdicts {
        let _ = write!(out, "\nGo release mode\n{}", verdict::text(v));
    }
    out.push('\n');
    lost_text(&mut out, &snapshot.lost);
    out
}

/// How many cgroups the report lists, most released first.
const CGROUPS_SHOWN: usize = 10;

/// Every process together, those no longer listed included, and per cgroup.
fn totals_text(out: &mut String, snapshot: &Snapshot) {
    let t = &snapshot.totals;
    let _ = writeln!(
        out,
        "\nall {} processes: released {}; mapped {}; faults {} minor, {} major",
        t.processes,
        human_bytes(t.released_bytes),
        human_bytes(t.mappings.grown_bytes()),
        t.faults.minor,
        t.faults.major,
    );
    if snapshot.forgotten > 0 {
        let _ = writeln!(
            out,
            "  ({} exited ones are no longer listed, to keep memtrace's memory bounded: what they counted is in these totals)",
            snapshot.forgotten
        );
    }
    let mut cgroups: Vec<_> = snapshot.cgroups.iter().collect();
    cgroups.sort_by_key(|c| std::cmp::Reverse(c.totals.released_bytes));
    let _ = writeln!(out, "by cgroup, most released first:");
    for c in cgroups.iter().take(CGROUPS_SHOWN) {
        let _ = writeln!(
            out,
            "  {:>10} released, {:>8} processes ({} live)  {}",
            human_bytes(c.totals.released_bytes),
            c.totals.processes,
            c.totals.live_processes,
            c.label()
        );
    }
    if cgroups.len() > CGROUPS_SHOWN {
        let more = cgroups.len() - CGROUPS_SHOWN;
        let _ = writeln!(out, "  … and {more} more cgroups (see --json)");
    }
}

fn process_text(out: &mut String, p: &ProcessView, counts_user_faults: bool) {
    let mut notes = String::new();
    if let Some(first) = p.comm_before_exec.first() {
        let _ = write!(notes, ", was {first} before exec");
    }
    if p.exited {
        notes.push_str(", exited");
    }
    let _ = writeln!(out, "pid {} ({}{notes})", p.pid, p.comm);
    whereabouts_text(out, p);
    madvise_text(out, p);
    mappings_text(out, &p.mappings);
    faults_text(out, p, counts_user_faults);
    rss_text(out, p);
    smaps_text(out, p);
    if let Some(stacks) = &p.stacks {
        stacks::stacks_text(out, stacks, "by bytes, then by calls");
    }
}

/// `  cgroup /libpod_parent/libpod-4f79… (podman container 4f797c539e6c, pid 1 inside)`.
fn whereabouts_text(out: &mut String, p: &ProcessView) {
    let Some(cgroup) = &p.cgroup else {
        return;
    };
    let mut notes = placement_notes(p.container.as_ref(), p.pod.as_ref());
    if let Some(nspid) = p.nspid.filter(|&n| n != p.pid) {
        notes.push(format!("pid {nspid} inside"));
    }
    match notes.is_empty() {
        true => {
            let _ = writeln!(out, "  cgroup {cgroup}");
        }
        false => {
            let _ = writeln!(out, "  cgroup {cgroup} ({})", notes.join(", "));
        }
    }
}

fn madvise_text(out: &mut String, p: &ProcessView) {
    if p.madvise.is_empty() {
        let _ = writeln!(out, "  madvise: no calls");
        return;
    }
    let _ = writeln!(
        out,
        "  {:<16} {:>10} {:>8} {:>12}",
        "madvise advice", "calls", "failed", "bytes"
    );
    for a in &p.madvise {
        let kind = if a.release { "release" } else { "hint" };
        let _ = writeln!(
            out,
            "  {:<16} {:>10} {:>8} {:>12}  {kind}",
            a.name,
            a.calls,
            a.failed,
            human_bytes(a.bytes)
        );
    }
    let parts: Vec<String> = p
        .madvise
        .iter()
        .filter(|a| a.release && a.bytes > 0)
        .map(|a| format!("{} {}", a.name, human_bytes(a.bytes)))
        .collect();
    let _ = write!(out, "  released: {}", human_bytes(p.released_bytes));
    if !parts.is_empty() {
        let _ = write!(out, " ({})", parts.join(", "));
    }
    out.push('\n');
    if !p.advised_by.is_empty() {
        let callers: Vec<String> = p.advised_by.iter().map(u32::to_string).collect();
        let _ = writeln!(
            out,
            "  advised by other processes (process_madvise): {}",
            callers.join(", ")
        );
    }
}

fn mappings_text(out: &mut String, m: &MappingsView) {
    let calls: u64 = m.mmap.values().map(|c| c.calls).sum();
    let _ = write!(
        out,
        "  mappings: mmap {calls} calls {}",
        human_bytes(m.mapped_bytes())
    );
    let kinds: Vec<String> = m
        .mmap
        .iter()
        .map(|(kind, c)| format!("{} {}", kind.name().replace('_', " "), human_bytes(c.bytes)))
        .collect();
    if !kinds.is_empty() {
        let _ = write!(out, " ({})", kinds.join(", "));
    }
    let _ = write!(
        out,
        "; munmap {} calls {}",
        m.munmap.calls,
        human_bytes(m.munmap.bytes)
    );
    if m.brk_grow.calls + m.brk_shrink.calls + m.brk_unknown > 0 {
        let (grow, shrink) = (
            human_bytes(m.brk_grow.bytes),
            human_bytes(m.brk_shrink.bytes),
        );
        let _ = write!(out, "; brk +{grow} −{shrink}");
    }
    if m.mremap_grow.calls + m.mremap_shrink.calls > 0 {
        let (grow, shrink) = (
            human_bytes(m.mremap_grow.bytes),
            human_bytes(m.mremap_shrink.bytes),
        );
        let _ = write!(out, "; mremap +{grow} −{shrink}");
    }
    let _ = write!(out, "; net {}", signed_bytes(m.net_bytes));
    if !m.failed.is_empty() {
        let failed: Vec<String> = m
            .failed
            .iter()
            .map(|(call, n)| format!("{call} {n}"))
            .collect();
        let _ = write!(out, "; failed: {}", failed.join(", "));
    }
    out.push('\n');
}

fn faults_text(out: &mut String, p: &ProcessView, counts_user_faults: bool) {
    let f = &p.faults;
    let mut parts = Vec::new();
    if let (Some(minor), Some(major)) = (f.minor, f.major) {
        parts.push(format!("{minor} minor, {major} major"));
    }
    // Counted only with --fault-events (a program on every fault); when asked for and not
    // attachable, the start-up warning said so.
    if let (true, Some(user), Some(write)) = (counts_user_faults, f.user, f.user_write) {
        parts.push(format!("{user} taken in user mode ({write} on write)"));
    }
    if f.events > 0 {
        parts.push(format!("{} fault events", f.events));
    }
    if parts.is_empty() {
        parts.push("not known".to_owned());
    }
    let _ = writeln!(out, "  faults: {}", parts.join("; "));
}

fn rss_text(out: &mut String, p: &ProcessView) {
    let sizes: Vec<String> = p
        .rss
        .size
        .iter()
        .filter_map(|(member, size)| Some(format!("{} {}", member.name(), human_bytes((*size)?))))
        .collect();
    if sizes.is_empty() {
        return;
    }
    let _ = write!(out, "  rss (kernel counters, latest): {}", sizes.join(", "));
    let taken: Vec<String> = p
        .rss
        .external_drop
        .iter()
        .filter(|(_, bytes)| **bytes > 0)
        .map(|(member, bytes)| format!("{} {}", member.name(), human_bytes(*bytes)))
        .collect();
    if !taken.is_empty() {
        let _ = write!(
            out,
            "; taken by reclaim or the OOM reaper: {}",
            taken.join(", ")
        );
    }
    out.push('\n');
}

fn smaps_text(out: &mut String, p: &ProcessView) {
    if let (Some(status), Some(why)) = (p.smaps_rollup.status, p.smaps_rollup.refused) {
        let _ = writeln!(
            out,
            "  /proc/{}/status: VmRSS {} (anon {}, file {}, shmem {}), VmSwap {}; LazyFree unknown: {why}",
            p.pid,
            human_bytes(status.rss),
            human_bytes(status.anon),
            human_bytes(status.file),
            human_bytes(status.shmem),
            human_bytes(status.swap),
        );
    }
    let (Some(first), Some(last)) = (p.smaps_rollup.first, p.smaps_rollup.last) else {
        return;
    };
    let change = |a: u64, b: u64| {
        if a == b {
            human_bytes(b)
        } else {
            format!("{} → {}", human_bytes(a), human_bytes(b))
        }
    };
    let _ = writeln!(
        out,
        "  smaps_rollup: Rss {}, Anonymous {}, LazyFree {}, AnonHugePages {}, Swap {}",
        change(first.rss, last.rss),
        change(first.anonymous, last.anonymous),
        change(first.lazy_free, last.lazy_free),
        change(first.anon_huge_pages, last.anon_huge_pages),
        change(first.swap, last.swap),
    );
}

/// The plain-English paragraph, wrapped, under the numbers it explains.
fn explanation_text(out: &mut String, sentences: &[String]) {
    const WIDTH: usize = 96;
    let mut line = String::from("  in short:");
    for word in sentences.join(" ").split(' ') {
        if line.chars().count() + 1 + word.chars().count() > WIDTH {
            let _ = writeln!(out, "{line}");
            line = String::from("   ");
        }
        line.push(' ');
        line.push_str(word);
    }
    let _ = writeln!(out, "{line}");
}

#[cfg(test)]
mod tests {
    use memtrace_common::advice;

    use memtrace_common::lost::Lost;

    use super::*;
    use crate::{
        analysis::{selection::Selection, snapshot::Window},
        cli::SortKey,
        kernel::LostCounts,
        model::{Model, attribution::Identity, event::test_madvise},
    };

    fn snapshot(model: &Model, selection: &Selection) -> Snapshot {
        Snapshot::new(
            model,
            selection,
            Window {
                elapsed_ns: 2_500_000_000,
                ..Window::default()
            },
        )
    }

    #[test]
    fn text_report_golden() {
        let mut model = Model::default();
        for _ in 0..51 {
            model.record(&test_madvise(42, advice::FREE, 4096, None));
        }
        model.record(&test_madvise(42, advice::FREE, 4096, Some(libc::EINVAL)));
        model.attribution.name(42, "workload");
        model.lost = LostCounts::default().with(Lost::RingFull, vec![0, 3]);
        let mut snapshot = snapshot(&model, &Selection::default());
        snapshot.go_verdicts.clear();
        let report = report(&snapshot, StopReason::TargetExited, None);
        assert_eq!(
            report,
            "memtrace report: 2.5 s traced (traced process exited)\n\
             \n\
             pid 42 (workload)\n\
             \x20 madvise advice        calls   failed        bytes\n\
             \x20 FREE                     52        1    204.0 KiB  release\n\
             \x20 released: 204.0 KiB (FREE 204.0 KiB)\n\
             \x20 mappings: mmap 0 calls 0 B; munmap 0 calls 0 B; net +0 B\n\
             \x20 faults: 0 taken in user mode (0 on write)\n\
             \x20 in short: 204.0 KiB was released with MADV_FREE: such pages stay in RSS as LazyFree until\n\
             \x20   memory pressure reclaims them, unless they are written to again or unmapped (how much is\n\
             \x20   still LazyFree is read only for --pid targets). 1 madvise calls failed and released nothing.\n\
             \n\
             lost events: 3 (ring buffer full: 3 [cpu1=3]) — totals above are undercounts; retry with a larger --ring-size\n"
        );
    }

    #[test]
    fn top_and_sort_select_processes() {
        let mut model = Model::default();
        for (pid, faults) in [(1, 10), (2, 300), (3, 20)] {
            model.attribution.set_faults(
                pid,
                memtrace_common::events::fault::FaultCounts {
                    user: faults,
                    write: 0,
                },
            );
            model.attribution.name(pid, &format!("p{pid}"));
        }
        let selection = Selection {
            sort: SortKey::Faults,
            ..Selection::default()
        };
        let snapshot = snapshot(&model, &selection);
        let pids: Vec<u32> = snapshot.processes.iter().map(|p| p.pid).collect();
        assert_eq!(pids, vec![2, 3, 1]);
        let report = report(&snapshot, StopReason::Duration, Some(2));
        assert!(report.contains("pid 2 (p2)") && report.contains("pid 3 (p3)"));
        assert!(!report.contains("pid 1 (p1)"));
        assert!(report.contains("… and 1 more processes"));
        let comm = Selection {
            comms: vec!["p1".into()],
            ..Selection::default()
        };
        let pids: Vec<u32> = snapshot_pids(&model, &comm);
        assert_eq!(pids, vec![1]);
    }

    /// What /proc showed of a process: its cgroup and its pid inside its namespace.
    fn place(model: &mut Model, pid: u32, cgroup: &str, nspid: u32) {
        let serial = model.attribution.serial_of(pid).expect("met");
        let identity = Identity {
            cgroup: Some(cgroup.to_owned()),
            nspid: Some(nspid),
            ..Identity::default()
        };
        model.attribution.identify(pid, serial, identity);
    }

    #[test]
    fn a_process_names_its_cgroup_container_and_pid_inside() {
        let mut model = Model::default();
        model.record(&test_madvise(42, advice::FREE, 4096, None));
        let id = "4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970";
        place(&mut model, 42, &format!("/libpod_parent/libpod-{id}"), 1);
        model.record(&test_madvise(43, advice::FREE, 4096, None));
        place(&mut model, 43, "/user.slice", 43);
        let report = report(
            &snapshot(&model, &Selection::default()),
            StopReason::Duration,
            None,
        );
        assert!(
            report.contains(&format!(
                "pid 42 (test)\n  cgroup /libpod_parent/libpod-{id} (podman container 4f797c539e6c, pid 1 inside)\n"
            )),
            "{report}"
        );
        assert!(
            report.contains("pid 43 (test)\n  cgroup /user.slice\n"),
            "{report}"
        );
    }

    fn snapshot_pids(model: &Model, selection: &Selection) -> Vec<u32> {
        snapshot(model, selection)
            .processes
            .iter()
            .map(|p| p.pid)
            .collect()
    }

    #[test]
    fn summary_json_shape() {
        let mut model = Model::default();
        model.record(&test_madvise(42, advice::FREE, 8192, None));
        let snapshot = snapshot(&model, &Selection::default());
        let line = crate::output::json::Summary::line(&snapshot, StopReason::Duration);
        let v: serde_json::Value = serde_json::from_str(&line.to_json()).unwrap();
        assert_eq!(v["type"], "summary");
        assert_eq!(v["schema"], crate::output::json::SCHEMA_VERSION);
        assert_eq!(v["stop_reason"], "duration");
        assert_eq!(v["processes"][0]["released_bytes"], 8192);
        assert_eq!(v["processes"][0]["madvise"][0]["name"], "FREE");
        assert_eq!(v["processes"][0]["madvise"][0]["calls"], 1);
        assert_eq!(
            v["processes"][0]["faults"]["minor"],
            serde_json::Value::Null
        );
        assert_eq!(v["processes"][0]["faults"]["user"], 0);
        assert_eq!(v["processes"][0]["mappings"]["net_bytes"], 0);
        assert_eq!(v["processes"][0]["rss"]["anon"], serde_json::Value::Null);
        assert_eq!(v["processes"][0]["rss"]["external_drop"]["anon"], 0);
        assert_eq!(
            v["processes"][0]["reclaim"]["memcg"],
            serde_json::Value::Null
        );
        assert_eq!(v["lost"]["total"], 0);
        assert_eq!(v["lost"]["reclaim_pending_full"], serde_json::json!([]));
    }
}
