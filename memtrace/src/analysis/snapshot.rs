//! The one output model: the model at one moment, with what analysis adds to it (the plain-
//! English explanation, Go verdicts), arranged as the reports show it. The text report, the
//! live view, the JSON summaries and the Prometheus page are all rendered from a [`Snapshot`];
//! the types here that JSON shows derive `Serialize` and `JsonSchema`, so the schema follows
//! them.

use std::collections::BTreeMap;

use memtrace_common::events::{
    rss::{RSS_MEMBERS, RssMember},
    stall::{ReclaimKind, ScanCounts, ScanSlot},
};
use schemars::JsonSchema;
use serde::Serialize;

use super::{
    advice::{AdviceView, advice_views},
    by_name::ByName,
    cgroups::{self, CgroupView, Sum, TotalsView},
    explain,
    golang::verdict::Verdict,
    groups::{self, GroupView},
    stacks::StacksView,
};
use crate::{
    cli::{GroupBy, SortKey},
    kernel::{LostCounts, procfs::SmapsRollup, status::StatusMemory},
    model::{
        Model,
        attribution::ProcessStats,
        container::{Container, Pod},
        counts::MappingTotals,
        event::OomKill,
        reclaim::{KswapdNode, Reclaim, StallStats, bucket_bounds},
    },
};

/// Which processes a report shows, in which order.
#[derive(Clone, Debug)]
pub struct Selection {
    /// Only processes with one of these names (none: all).
    pub comms: Vec<String>,
    /// Only processes in one of these containers (full ids or prefixes; none: all).
    pub containers: Vec<String>,
    /// Only processes in one of these cgroups or below (none: all).
    pub cgroups: Vec<String>,
    /// How the report groups processes.
    pub by: GroupBy,
    pub sort: SortKey,
    /// The named targets (`--pid`), whose LazyFree the reclaim report follows.
    pub targets: Vec<u32>,
    /// Whether user-mode faults were counted (else they are shown as unavailable).
    pub counts_user_faults: bool,
}

impl Default for Selection {
    fn default() -> Self {
        Self {
            comms: Vec::new(),
            containers: Vec::new(),
            cgroups: Vec::new(),
            by: GroupBy::Process,
            sort: SortKey::Released,
            targets: Vec::new(),
            counts_user_faults: true,
        }
    }
}

impl Selection {
    /// Whether a process passes the `--comm`, `--container` and `--cgroup` filters.
    pub fn shows(&self, process: Option<&ProcessStats>) -> bool {
        let by_comm =
            self.comms.is_empty() || process.is_some_and(|p| self.comms.contains(&p.comm));
        let container = process.and_then(|p| p.whereabouts.placement.container.as_ref());
        let by_container = self.containers.is_empty()
            || container.is_some_and(|c| self.containers.iter().any(|id| c.id.starts_with(id)));
        let cgroup = process.and_then(|p| p.whereabouts.cgroup.as_deref());
        let by_cgroup = self.cgroups.is_empty()
            || cgroup.is_some_and(|path| self.cgroups.iter().any(|c| within(path, c)));
        by_comm && by_container && by_cgroup
    }

    /// The processes to report, best first by `--sort` (ties in the order kept: earlier
    /// holders of reused pids, then by pid).
    fn select<'a>(&self, model: &'a Model) -> Vec<&'a ProcessStats> {
        let mut processes: Vec<&ProcessStats> = model
            .attribution
            .processes()
            .filter(|p| self.shows(Some(p)))
            .collect();
        processes.sort_by_key(|p| std::cmp::Reverse(p.rank(self.sort)));
        processes
    }
}

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

/// Whether cgroup `path` is `ancestor` or below it.
fn within(path: &str, ancestor: &str) -> bool {
    ancestor == "/"
        || path == ancestor
        || path
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.starts_with('/'))
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
                view.stacks = StacksView::of(&model.stacks, p.pid);
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
    let bound = u64::try_from(stolen_pages).unwrap_or(0) * crate::kernel::procfs::page_size();
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

/// One process, as every report shows it.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessView {
    pub pid: u32,
    /// When the process started, in clock ticks after boot (`starttime` of /proc/PID/stat):
    /// with the pid, its identity. Null when it was gone before memtrace could read it.
    pub start_time: Option<u64>,
    /// It exited while traced (a later process with the same pid is another entry).
    pub exited: bool,
    /// Its memory cgroup's id as the kernel programs read it: the inode number of the cgroup's
    /// directory in the hierarchy that holds the memory controller (cgroup v2: the process's
    /// own cgroup; v1: its cgroup in the memory hierarchy). Read when it first made a syscall
    /// counted in the kernel (runs without event lines), as its threads exit, and as it
    /// triggered an OOM kill; null when none of these happened while traced.
    pub memory_cgroup_id: Option<u64>,
    pub comm: String,
    /// Its names before each exec while traced, oldest first (`comm` is the current one); ""
    /// where memtrace met the process first at its exec, when the old name was already gone.
    pub comm_before_exec: Vec<String>,
    /// The cgroup it is counted in (see the summary's `cgroups`), in the v1 memory hierarchy,
    /// else v2: as /proc/PID/cgroup showed it, else the kernel's memory cgroup id named, else
    /// its parent's at fork or where it was at attach; null when unknown, or not learnt yet.
    pub cgroup: Option<String>,
    /// The container the cgroup's path names (runtime and id); null for none.
    pub container: Option<Container>,
    /// The Kubernetes pod the cgroup's path names (UID and QoS class); null for none.
    pub pod: Option<Pod>,
    /// Its pid inside its own pid namespace (`NSpid`): what `ps` shows in its container.
    pub nspid: Option<u32>,
    /// Bytes given back by releasing advice.
    pub released_bytes: u64,
    /// Pids that used process_madvise on this process.
    pub advised_by: Vec<u32>,
    pub madvise: Vec<AdviceView>,
    pub mappings: MappingsView,
    pub faults: FaultsView,
    /// Latest kernel RSS counters (kmem/rss_stat), bytes; null until seen.
    pub rss: RssView,
    /// /proc/PID/smaps_rollup when first seen and at the latest sample.
    pub smaps_rollup: SmapsView,
    /// The report's plain-English reading, one sentence per entry.
    pub explanation: Vec<String>,
    /// This process's direct and memcg reclaim stalls.
    pub reclaim: ByName<ReclaimKind, Option<StallView>>,
    /// With `--stacks`: where its calls and stalls came from; null without.
    pub stacks: Option<StacksView>,
}

impl ProcessView {
    /// `taken`: what reclaim and the OOM reaper took per RSS member; None when withheld
    /// (shown as zero, with the snapshot's `taken_withheld` saying why).
    fn new(
        p: &ProcessStats,
        reclaim: &Reclaim,
        counts_user_faults: bool,
        taken: Option<[u64; RSS_MEMBERS]>,
        explain: bool,
    ) -> Self {
        let known = p.task_faults.known();
        Self {
            pid: p.pid,
            start_time: p.start_time,
            exited: p.exited,
            memory_cgroup_id: p.memory_cgroup,
            comm: p.comm.clone(),
            comm_before_exec: p.exec_from.clone(),
            cgroup: p.cgroup.as_ref().and_then(|c| c.path()).map(str::to_owned),
            container: p.whereabouts.placement.container.clone(),
            pod: p.whereabouts.placement.pod.clone(),
            nspid: p.whereabouts.nspid,
            released_bytes: p.released_bytes(),
            advised_by: p.advised_by.iter().copied().collect(),
            madvise: advice_views(&p.madvise),
            mappings: MappingsView::from(&p.mappings),
            faults: FaultsView {
                minor: known.then(|| p.task_faults.minor()),
                major: known.then(|| p.task_faults.major()),
                user: counts_user_faults.then_some(p.faults.user),
                user_write: counts_user_faults.then_some(p.faults.write),
                events: p.fault_events,
            },
            rss: RssView {
                size: ByName::from_fn(|member: RssMember| p.rss.size[member as usize]),
                external_drop: ByName::from_fn(|member: RssMember| {
                    taken.map_or(0, |t| t[member as usize])
                }),
            },
            smaps_rollup: SmapsView {
                first: p.smaps_first,
                last: p.smaps_last,
                refused: p.status_last.map(|(_, why)| why),
                status: p.status_last.map(|(status, _)| status),
            },
            // Prose is for people: the metrics page, built every second, has none.
            explanation: if explain {
                explain::explain(p, reclaim, taken)
            } else {
                Vec::new()
            },
            reclaim: stalls_of(reclaim, p.pid),
            stacks: None,
        }
    }

    /// Bytes released with one advice.
    pub fn released_with(&self, advice: u32) -> u64 {
        self.madvise
            .iter()
            .find(|a| a.advice == advice)
            .map_or(0, |a| a.bytes)
    }
}

fn stalls_of(reclaim: &Reclaim, pid: u32) -> ByName<ReclaimKind, Option<StallView>> {
    ByName::from_fn(|kind| reclaim.of(pid, kind).map(StallView::from))
}

/// Address-space changes by mmap, munmap, mremap and brk, and their net effect.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MappingsView {
    #[serde(flatten)]
    pub totals: MappingTotals,
    /// Mapped + grown − unmapped − shrunk.
    pub net_bytes: i128,
}

impl From<&MappingTotals> for MappingsView {
    fn from(m: &MappingTotals) -> Self {
        Self {
            totals: m.clone(),
            net_bytes: m.net_bytes(),
        }
    }
}

impl std::ops::Deref for MappingsView {
    type Target = MappingTotals;

    fn deref(&self) -> &MappingTotals {
        &self.totals
    }
}

impl MappingsView {
    /// Address space added: mmap, brk and mremap growth.
    pub fn grown_bytes(&self) -> u64 {
        self.mapped_bytes() + self.brk_grow.bytes + self.mremap_grow.bytes
    }

    /// Address space given back: munmap, brk and mremap shrinking.
    pub fn shrunk_bytes(&self) -> u64 {
        self.munmap.bytes + self.brk_shrink.bytes + self.mremap_shrink.bytes
    }
}

/// Page faults over the window.
#[derive(Clone, Copy, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultsView {
    /// From the kernel's per-task counters; null when never sampled.
    pub minor: Option<u64>,
    pub major: Option<u64>,
    /// Taken in user mode (exceptions/page_fault_user); null when it could not attach.
    pub user: Option<u64>,
    pub user_write: Option<u64>,
    /// Individual fault events received (`--fault-events`).
    pub events: u64,
}

/// The kernel's RSS counters of a process, in bytes, by member.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RssView {
    /// Latest size; null until seen.
    #[serde(flatten)]
    pub size: ByName<RssMember, Option<u64>>,
    /// Taken from the process by other tasks (reclaim, OOM reaper).
    pub external_drop: ByName<RssMember, u64>,
}

#[derive(Clone, Copy, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmapsView {
    pub first: Option<SmapsRollup>,
    pub last: Option<SmapsRollup>,
    /// Why smaps_rollup could not be read (no ptrace access to the process); null when it was,
    /// or was not sampled.
    pub refused: Option<&'static str>,
    /// /proc/PID/status's resident memory, read in its place when it was refused.
    pub status: Option<StatusMemory>,
}

/// Stalls of one process (or of all) in one kind of reclaim.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StallView {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub mean_ns: u64,
    /// Upper bound of the log2 bucket holding the median, capped at the maximum; null
    /// without stalls.
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    /// Pages.
    pub nr_reclaimed: u64,
    /// Inactive-LRU pages scanned during the stalls.
    pub nr_scanned: u64,
    /// `[low_us, high_us, count]` per non-empty log2 bucket.
    pub histogram_us: Vec<[u64; 3]>,
    /// The whole histogram, for renderers that show every bucket.
    #[serde(skip)]
    pub stats: StallStats,
}

impl From<&StallStats> for StallView {
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
                    let (low, high) = bucket_bounds(b);
                    [low, high, n]
                })
                .collect(),
            stats: *s,
        }
    }
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
            StalledView {
                pid,
                comm: process.map(|p| p.comm.clone()).filter(|c| !c.is_empty()),
                stalls: stalls_of(reclaim, pid),
                lazy_free: targets.contains(&pid).then(|| lazy_free(process)).flatten(),
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
        let page = crate::kernel::procfs::page_size();
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
        let page = crate::kernel::procfs::page_size();
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
