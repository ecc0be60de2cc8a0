//! Reclaim, kswapd and OOM: records streamed through the events ring buffer and the values of
//! the kernel-side aggregation maps.

/// Number of log2 latency buckets. Bucket `b` (b >= 1) holds stalls of `2^(b-1) ..= 2^b - 1`
/// microseconds, except bucket 1 which also holds sub-microsecond stalls; bucket 0 is unused.
/// A power of two: the kernel programs mask indices with it.
pub const STALL_BUCKETS: usize = 32;

/// Which reclaim a task stalled in.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReclaimKind {
    /// `vmscan/mm_vmscan_direct_reclaim_begin/end`: the zone fell below its min watermark.
    Direct = 0,
    /// `vmscan/mm_vmscan_memcg_reclaim_begin/end`: the task's memory cgroup hit its limit.
    Memcg = 1,
}

/// Number of [`ReclaimKind`]s (the size of the system-wide histogram array).
pub const RECLAIM_KINDS: u32 = 2;

impl ReclaimKind {
    pub const fn from_u32(value: u32) -> Option<Self> {
        match value {
            0 => Some(Self::Direct),
            1 => Some(Self::Memcg),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Memcg => "memcg",
        }
    }
}

/// A reclaim begin parked per thread id until the matching end.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingReclaim {
    pub start_ns: u64,
    pub gfp_flags: u64,
    pub order: i32,
    /// A [`ReclaimKind`] as `u32`.
    pub reclaim_kind: u32,
    /// Pages scanned by `mm_vmscan_lru_shrink_inactive` inside this stall.
    pub nr_scanned: u64,
}

/// One completed reclaim stall of a thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReclaimStall {
    /// [`crate::EventKind::ReclaimStall`] as `u32`.
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    /// A [`ReclaimKind`] as `u32`.
    pub reclaim_kind: u32,
    pub order: i32,
    pub _pad: u32,
    pub gfp_flags: u64,
    /// `bpf_ktime_get_ns()` at begin (CLOCK_MONOTONIC).
    pub start_ns: u64,
    pub latency_ns: u64,
    /// Pages the reclaim freed (the end tracepoint's `nr_reclaimed`).
    pub nr_reclaimed: u64,
    /// Inactive-LRU pages scanned during the stall.
    pub nr_scanned: u64,
    pub comm: [u8; 16],
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for ReclaimStall {}

/// Key of the per-process stall histograms.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StallKey {
    pub tgid: u32,
    /// A [`ReclaimKind`] as `u32`.
    pub reclaim_kind: u32,
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for StallKey {}

/// Stalls of one process (or the whole system) in one kind of reclaim, per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StallHist {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub nr_reclaimed: u64,
    pub nr_scanned: u64,
    /// Log2 latency buckets in microseconds (see [`STALL_BUCKETS`]).
    pub buckets: [u64; STALL_BUCKETS],
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for StallHist {}

/// The OOM killer chose a victim (`oom/mark_victim`). Sizes in kB, as the tracepoint gives them;
/// fields this kernel's tracepoint lacks read as `u64::MAX` (or `u32::MAX`/`i32::MIN`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomVictim {
    /// [`crate::EventKind::OomKill`] as `u32`.
    pub kind: u32,
    /// The victim's pid (tgid).
    pub pid: u32,
    /// The task that ran out of memory and invoked the OOM killer (often the victim itself).
    pub trigger_tgid: u32,
    pub trigger_tid: u32,
    pub uid: u32,
    pub oom_score_adj: i32,
    pub ts_ns: u64,
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub pgtables_kb: u64,
    /// Kernfs id (the directory's inode number) of the triggering task's memory cgroup, read
    /// through `task->cgroups->subsys[memory]->cgroup->kn->id` at offsets from the kernel's
    /// BTF; 0 when unknown.
    pub trigger_memcg_id: u64,
    pub comm: [u8; 16],
    pub trigger_comm: [u8; 16],
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for OomVictim {}

/// kswapd of a node woke to balance it, or went back to sleep.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KswapdEvent {
    /// [`crate::EventKind::Kswapd`] as `u32`.
    pub kind: u32,
    pub nid: u32,
    /// 1 = `mm_vmscan_kswapd_wake`, 0 = `mm_vmscan_kswapd_sleep`.
    pub awake: u32,
    /// Allocation order kswapd balances for (wake only).
    pub order: i32,
    pub ts_ns: u64,
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for KswapdEvent {}

/// What the OOM reaper did with a victim: `oom/wake_reaper`, `start_task_reaping`,
/// `finish_task_reaping`, `skip_task_reaping`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReaperPhase {
    Woken = 0,
    Start = 1,
    Finish = 2,
    Skip = 3,
}

impl ReaperPhase {
    pub const fn from_u32(value: u32) -> Option<Self> {
        match value {
            0 => Some(Self::Woken),
            1 => Some(Self::Start),
            2 => Some(Self::Finish),
            3 => Some(Self::Skip),
            _ => None,
        }
    }
}

/// One OOM reaper step for a victim task.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomReaperEvent {
    /// [`crate::EventKind::OomReaper`] as `u32`.
    pub kind: u32,
    /// The victim task (as `oom/mark_victim` named it).
    pub pid: u32,
    /// A [`ReaperPhase`] as `u32`.
    pub phase: u32,
    pub _pad: u32,
    pub ts_ns: u64,
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for OomReaperEvent {}

/// Wakeups of kswapd one process requested (`mm_vmscan_wakeup_kswapd`), per CPU, keyed by tgid.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KswapdWakeups {
    pub count: u64,
    /// `comm` of the latest requesting thread.
    pub comm: [u8; 16],
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for KswapdWakeups {}

/// Pages the inactive LRU scan looked at and freed (`mm_vmscan_lru_shrink_inactive`), per CPU.
/// Index [`SCAN_IN_STALL`] counts scans inside a traced direct/memcg stall; [`SCAN_BACKGROUND`]
/// everything else (kswapd, proactive reclaim, untraced tasks).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanCounts {
    pub nr_scanned: u64,
    pub nr_reclaimed: u64,
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for ScanCounts {}

pub const SCAN_IN_STALL: u32 = 0;
pub const SCAN_BACKGROUND: u32 = 1;
pub const SCAN_SLOTS: u32 = 2;
