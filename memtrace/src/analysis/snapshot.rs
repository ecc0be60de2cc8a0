//! The one output model: the model at one moment, with what analysis adds to it (the plain-
//! English explanation, Go verdicts), arranged as the reports show it. The text report, the
//! live view, the JSON summaries and the Prometheus page are all rendered from a [`Snapshot`];
//! the types here that JSON shows derive `Serialize` and `JsonSchema`, so the schema follows
//! them.

use std::collections::BTreeMap;

use memtrace_common::events::stall::{ReclaimKind, ScanCounts, ScanSlot};
use schemars::JsonSchema;
use serde::Serialize;

use super::{
    advice::{AdviceView, advice_views},
    by_name::ByName,
    cgroups::{self, CgroupView, Sum, TotalsView},
    golang::verdict::Verdict,
    groups::{self, GroupView},
    process::{ProcessView, StallView, stalls_of},
    selection::Selection,
    stacks::{Sites, StacksView},
};
use crate::{
    kernel::LostCounts,
    model::{
        Model,
        attribution::ProcessStats,
        event::OomKill,
        reclaim::{KswapdNode, Reclaim},
    },
};

/// How much a snapshot holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Detail {
    /// Every process selected, with its plain-English explanation: reports and summaries.
    #[default]
    Report,
    /// A frame of the live view, without prose: the top `rows` processes by `--sort` (every
    /// one when `None`); [`Snapshot::listed`] says how many there are.
    Frame { rows: Option<usize> },
    /// For the metrics page, built every second: the top `processes` by `--sort` (the rest
    /// summed in [`Snapshot::others`]), no explanations, no per-process reclaim report.
    Metrics { processes: usize },
}

/// Everything a report shows, at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Since tracing began.
    pub elapsed_ns: u64,
    pub system_wide: bool,
    /// Selected by `--comm`, best first by `--sort` (with [`Detail::Frame`] or
    /// [`Detail::Metrics`], the top ones only).
    pub processes: Vec<ProcessView>,
    /// How many processes are selected and kept (`processes` may list fewer).
    pub listed: usize,
    /// process_madvise calls whose target could not be resolved.
    pub unattributed: Vec<AdviceView>,
    /// Exited processes dropped to keep memory bounded (their counts are in `cgroups` and
    /// `totals`).
    pub forgotten: u64,
    /// Per cgroup, the processes dropped included, cgroup order (unknown last).
    pub cgroups: Vec<CgroupView>,
    /// Every process selected, the dropped ones included.
    pub totals: TotalsView,
    /// With [`Detail::Metrics`], what the processes beyond the top N counted, dropped ones
    /// included; `None` otherwise, or when no process is listed.
    pub others: Option<TotalsView>,
    /// The most recent OOM kills (a bounded number), oldest first.
    pub oom_kills: Vec<OomKill>,
    /// Every OOM kill seen.
    pub oom_kills_total: u64,
    /// Of those, the kills by the cgroup each names, where /proc told it.
    pub oom_kills_by_cgroup: BTreeMap<String, u64>,
    /// Every stall of the traced processes, per kind.
    pub system_stalls: ByName<ReclaimKind, Option<StallView>>,
    /// Processes with stalls (most stall time first), then `--pid` targets without any.
    pub stalled: Vec<StalledView>,
    pub kswapd: KswapdView,
    pub vmstat_delta: BTreeMap<String, i64>,
    pub lost: LostCounts,
    pub go_verdicts: Vec<Verdict>,
    pub counts_user_faults: bool,
    /// Set when the RSS counted as taken by reclaim or the OOM reaper is more than the kernel
    /// reclaimed and reaped over the window: those numbers are then withheld (zero in every
    /// process) and this says why.
    pub taken_withheld: Option<String>,
    /// The processes grouped by container or cgroup (`--by`); empty by process.
    pub groups: Vec<GroupView>,
}

impl Snapshot {
    /// The model as reports show it. `now_ns` (CLOCK_MONOTONIC) closes kswapd periods still
    /// open.
    pub fn new(model: &Model, selection: &Selection, window: Window) -> Self {
        let reclaim = &model.reclaim;
        let mut selected = selection.select(model);
        let listed = selected.len();
        let taken_withheld = taken_beyond_the_kernel(&selected, model);
        let (cgroups, totals) = cgroups::totals(model, selection, taken_withheld.is_none());
        let (explain, others) = match window.detail {
            Detail::Report => (true, None),
            Detail::Frame { rows } => {
                selected.truncate(rows.unwrap_or(usize::MAX));
                (false, None)
            }
            Detail::Metrics { processes } => {
                let rest = selected.split_off(processes.min(selected.len()));
                let others = (processes > 0).then(|| {
                    let mut sum = Sum::default();
                    rest.iter().for_each(|p| sum.add(model, p));
                    model
                        .attribution
                        .folded
                        .values()
                        .for_each(|f| sum.add_folded(f));
                    sum.view(selection.counts_user_faults, taken_withheld.is_none())
                });
                (false, others)
            }
        };
        let processes: Vec<ProcessView> = selected
            .into_iter()
            .map(|p| {
                let taken = taken_withheld.is_none().then(|| p.taken());
                let mut view =
                    ProcessView::new(p, reclaim, selection.counts_user_faults, taken, explain);
                view.stacks = StacksView::of(&model.stacks, p.pid, p.start_time, Sites::All);
                view
            })
            .collect();
        let groups = groups::group(selection.by, &processes, &reclaim.ooms.recent, &model.memcg);
        Self {
            elapsed_ns: window.elapsed_ns,
            system_wide: window.system_wide,
            processes,
            listed,
            unattributed: advice_views(&model.attribution.unattributed),
            forgotten: model.attribution.forgotten,
            cgroups,
            totals,
            others,
            oom_kills: reclaim.ooms.recent.iter().cloned().collect(),
            oom_kills_total: reclaim.ooms.total,
            oom_kills_by_cgroup: reclaim.ooms.by_cgroup.clone(),
            system_stalls: ByName::from_fn(|kind| {
                reclaim
                    .system
                    .get(&kind)
                    .filter(|s| s.count > 0)
                    .map(StallView::from)
            }),
            stalled: match window.detail {
                Detail::Report => stalled(model, &selection.targets),
                Detail::Frame { .. } | Detail::Metrics { .. } => Vec::new(),
            },
            kswapd: KswapdView::new(reclaim, window.now_ns),
            vmstat_delta: reclaim.vmstat_delta(),
            lost: model.lost.clone(),
            go_verdicts: window.go_verdicts,
            counts_user_faults: selection.counts_user_faults,
            taken_withheld,
            groups,
        }
    }
}

/// Pages can leave a process's RSS for another task only through reclaim (counted in
/// /proc/vmstat's `pgsteal_*`) or the OOM reaper (at most its victims' RSS at the kill). When
/// the processes' taken bytes add up to more, memtrace cannot tell which are true (an address
/// space it mistook for another, pages unmapped but not freed): it withholds them all, and
/// this says why, rather than state an invented number.
fn taken_beyond_the_kernel(processes: &[&ProcessStats], model: &Model) -> Option<String> {
    let counted: u64 = processes.iter().flat_map(|p| p.taken()).sum();
    if counted == 0 {
        return None;
    }
    let bound = kernel_taken_bound(model)?;
    if counted <= bound {
        return None;
    }
    Some(format!(
        "RSS taken by reclaim or the OOM reaper is unknown: memtrace counted {counted} bytes, \
         but the kernel reclaimed and reaped at most {bound} over the window (/proc/vmstat \
         pgsteal, OOM victims' RSS)"
    ))
}

/// The most the kernel can have taken from processes over the window, in bytes; None when it
/// cannot be bounded (no /proc/vmstat samples, a kernel without `pgsteal_anon`/`_file`, or
/// an OOM victim of unknown size).
fn kernel_taken_bound(model: &Model) -> Option<u64> {
    let reclaim = &model.reclaim;
    let delta = reclaim.vmstat_delta();
    // Every page reclaim frees, memory-cgroup reclaim included, by type (5.8+);
    // `pgsteal_kswapd`/`_direct` leave out memory-cgroup reclaim.
    let stolen_pages = *delta.get("pgsteal_anon")? + *delta.get("pgsteal_file")?;
    let bound = u64::try_from(stolen_pages).unwrap_or(0) * crate::kernel::system::page_size();
    Some(bound + reclaim.ooms.victims_rss_kb()? * 1024)
}

/// When and how the snapshot is taken.
#[derive(Clone, Debug, Default)]
pub struct Window {
    pub elapsed_ns: u64,
    /// CLOCK_MONOTONIC now, the clock of kernel timestamps.
    pub now_ns: u64,
    pub system_wide: bool,
    pub go_verdicts: Vec<Verdict>,
    pub detail: Detail,
}

/// A process in the reclaim report: its stalls and, for a `--pid` target, its LazyFree.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StalledView {
    pub pid: u32,
    pub comm: Option<String>,
    pub stalls: ByName<ReclaimKind, Option<StallView>>,
    /// LazyFree (MADV_FREE'd pages still resident) of a `--pid` target; null for others.
    pub lazy_free: Option<LazyFreeView>,
    /// With `--stacks`: where it stalled, the top stacks by time stalled, then by stalls, each
    /// with its kernel and user frames; null without.
    pub stacks: Option<StacksView>,
}

/// LazyFree of a target at the start, its peak, and at the end: a drop means reclaim took
/// the pages (or the process wrote to them again).
#[derive(Clone, Copy, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LazyFreeView {
    pub first: Option<u64>,
    pub peak: Option<u64>,
    pub last: Option<u64>,
    pub dropped: Option<u64>,
}

/// Processes with stalls, most total stall time first, then targets without any.
fn stalled(model: &Model, targets: &[u32]) -> Vec<StalledView> {
    let reclaim = &model.reclaim;
    let mut totals: BTreeMap<u32, u64> = BTreeMap::new();
    for (&(pid, _), s) in &reclaim.stalls {
        *totals.entry(pid).or_default() += s.total_ns;
    }
    let mut ranked: Vec<(u32, u64)> = totals.into_iter().filter(|(_, t)| *t > 0).collect();
    ranked.sort_by_key(|&(pid, total)| (std::cmp::Reverse(total), pid));
    let quiet_targets = targets
        .iter()
        .copied()
        .filter(|pid| !reclaim.stalled_pids().any(|p| p == *pid));
    ranked
        .into_iter()
        .map(|(pid, _)| pid)
        .chain(quiet_targets)
        .map(|pid| {
            let process = model.attribution.process_by_pid(pid);
            let start = process.and_then(|p| p.start_time);
            StalledView {
                pid,
                comm: process.map(|p| p.comm.clone()).filter(|c| !c.is_empty()),
                stalls: stalls_of(reclaim, pid),
                lazy_free: targets.contains(&pid).then(|| lazy_free(process)).flatten(),
                stacks: StacksView::of(&model.stacks, pid, start, Sites::Stalls),
            }
        })
        .collect()
}

fn lazy_free(process: Option<&ProcessStats>) -> Option<LazyFreeView> {
    let p = process?;
    let first = p.smaps_first.map(|s| s.lazy_free);
    let last = p.smaps_last.map(|s| s.lazy_free);
    let peak = p.lazy_free_peak;
    Some(LazyFreeView {
        first,
        peak,
        last,
        dropped: peak.zip(last).map(|(p, l)| p.saturating_sub(l)),
    })
}

/// kswapd over the window.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KswapdView {
    pub nodes: Vec<KswapdNodeView>,
    /// Who asked kswapd to wake, most requests first.
    pub wakeups_by: Vec<WakeupView>,
    pub lru_inactive_in_stalls: ScanView,
    pub lru_inactive_background: ScanView,
}

/// Inactive-LRU pages scanned and reclaimed.
#[derive(Clone, Copy, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanView {
    pub nr_scanned: u64,
    pub nr_reclaimed: u64,
}

impl From<ScanCounts> for ScanView {
    fn from(c: ScanCounts) -> Self {
        Self {
            nr_scanned: c.nr_scanned,
            nr_reclaimed: c.nr_reclaimed,
        }
    }
}

impl KswapdView {
    fn new(reclaim: &Reclaim, now_ns: u64) -> Self {
        let mut wakeups_by: Vec<WakeupView> = reclaim
            .wakeups
            .iter()
            .map(|(&pid, w)| WakeupView {
                pid,
                comm: w.comm.clone(),
                count: w.count,
            })
            .collect();
        wakeups_by.sort_by_key(|w| (std::cmp::Reverse(w.count), w.pid));
        Self {
            nodes: reclaim
                .kswapd
                .at(now_ns)
                .into_iter()
                .map(|(nid, n)| KswapdNodeView::new(nid, &n))
                .collect(),
            wakeups_by,
            lru_inactive_in_stalls: reclaim.scans[ScanSlot::InStall as usize].into(),
            lru_inactive_background: reclaim.scans[ScanSlot::Background as usize].into(),
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KswapdNodeView {
    pub nid: u32,
    /// Active periods (wake … sleep); one still open at the end counts.
    pub periods: u64,
    pub wakes: u64,
    pub active_ns: u64,
    pub longest_ns: u64,
    pub awake_at_end: bool,
}

impl KswapdNodeView {
    fn new(nid: u32, n: &KswapdNode) -> Self {
        Self {
            nid,
            periods: n.periods,
            wakes: n.wakes,
            active_ns: n.active_ns,
            longest_ns: n.longest_ns,
            awake_at_end: n.awake_since.is_some(),
        }
    }
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WakeupView {
    pub pid: u32,
    pub comm: String,
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::attribution::Rss;

    fn vmstat(anon: u64, file: u64) -> BTreeMap<String, u64> {
        BTreeMap::from([
            ("pgsteal_anon".to_owned(), anon),
            ("pgsteal_file".to_owned(), file),
            ("pgsteal_kswapd".to_owned(), 0),
        ])
    }

    /// pid 5 with `anon` bytes taken; the kernel reclaimed `pages` over the window.
    fn model(anon: u64, pages: u64) -> Model {
        let mut model = Model::default();
        model.attribution.set_rss(BTreeMap::from([(
            5,
            Rss {
                size: [Some(0); 4],
                external_drop: [0, anon, 0, 0],
            },
        )]));
        model.reclaim.sample_vmstat(vmstat(1000, 50));
        model
            .reclaim
            .sample_vmstat(vmstat(1000 + pages / 2, 50 + pages - pages / 2));
        model
    }

    fn taken(snapshot: &Snapshot) -> u64 {
        snapshot.processes[0]
            .rss
            .external_drop
            .iter()
            .map(|(_, b)| *b)
            .sum()
    }

    #[test]
    fn taken_within_what_the_kernel_reclaimed_is_shown() {
        let page = crate::kernel::system::page_size();
        let snapshot = Snapshot::new(
            &model(10 * page, 10),
            &Selection::default(),
            Window::default(),
        );
        assert_eq!(snapshot.taken_withheld, None);
        assert_eq!(taken(&snapshot), 10 * page);
    }

    #[test]
    fn taken_beyond_what_the_kernel_reclaimed_is_withheld_and_said() {
        let page = crate::kernel::system::page_size();
        let snapshot = Snapshot::new(
            &model(11 * page, 10),
            &Selection::default(),
            Window::default(),
        );
        let why = snapshot.taken_withheld.as_deref().expect("withheld");
        assert!(why.contains(&format!("at most {}", 10 * page)), "{why}");
        assert_eq!(taken(&snapshot), 0);
        let explanation = snapshot.processes[0].explanation.join(" ");
        assert!(!explanation.contains("took"), "{explanation}");
        // Nothing reclaimed at all: nothing can have been taken.
        let snapshot = Snapshot::new(&model(page, 0), &Selection::default(), Window::default());
        assert!(snapshot.taken_withheld.is_some());
    }
}
