//! One process as every report shows it: its totals, faults, RSS, stalls and explanation,
//! arranged for output (the types JSON shows derive `Serialize` and `JsonSchema`).

use memtrace_common::events::{
    rss::{RSS_MEMBERS, RssMember},
    stall::ReclaimKind,
};
use schemars::JsonSchema;
use serde::Serialize;

use super::{
    advice::{AdviceView, advice_views},
    by_name::ByName,
    explain,
    stacks::StacksView,
};
use crate::{
    kernel::{procfs::SmapsRollup, status::StatusMemory},
    model::{
        attribution::ProcessStats,
        container::{Container, Pod},
        counts::MappingTotals,
        reclaim::{Reclaim, StallStats, bucket_bounds},
    },
};

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
    pub(super) fn new(
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

pub(super) fn stalls_of(reclaim: &Reclaim, pid: u32) -> ByName<ReclaimKind, Option<StallView>> {
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
