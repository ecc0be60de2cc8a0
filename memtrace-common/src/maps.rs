//! Names and indices of the maps and globals the kernel programs define, so userspace refers to
//! them by constant rather than by string literal.

/// Ring buffer carrying [`crate::SyscallEvent`]s to userspace.
pub const EVENTS: &str = "EVENTS";
/// Per-CPU `u64` counters of data the kernel side had to drop; indexed by [`Lost`].
pub const LOST: &str = "LOST";
/// `u32 tgid -> u8` set of processes to trace when [`FILTER_BY_TGID`] is set.
pub const TARGETS: &str = "TARGETS";

/// `u32 tgid -> FaultCounts`, per CPU.
pub const FAULTS: &str = "FAULTS";
/// `u32 mm_id -> RssState` (LRU).
pub const RSS: &str = "RSS";

/// Global `u8`: 1 = trace only tgids in [`TARGETS`]; 0 = trace every process.
pub const FILTER_BY_TGID: &str = "FILTER_BY_TGID";
/// Global `u32`: memtrace's own tgid, never traced (its own mmaps would pollute a system view).
pub const SELF_TGID: &str = "SELF_TGID";
/// Global `u64`: wake userspace once this many bytes wait in [`EVENTS`]; below that, records
/// are committed without a wakeup and userspace drains them on a timer.
pub const WAKEUP_BYTES: &str = "WAKEUP_BYTES";

/// Global `u8`: 1 = add children forked by traced processes to [`TARGETS`].
pub const FOLLOW_FORKS: &str = "FOLLOW_FORKS";
/// Globals `u32`: byte offsets of fields in `sched/sched_process_fork` and `kmem/rss_stat`
/// records, read from tracefs at load time (these layouts change across kernel versions).
pub const FORK_CHILD_PID_OFFSET: &str = "FORK_CHILD_PID_OFFSET";
pub const EXIT_GROUP_DEAD_OFFSET: &str = "EXIT_GROUP_DEAD_OFFSET";
/// Globals `u32`: byte offsets of `min_flt` and `maj_flt` in `struct task_struct`, from the
/// kernel's BTF; 0 when unknown (thread exits then carry no counters).
pub const TASK_MIN_FLT_OFFSET: &str = "TASK_MIN_FLT_OFFSET";
pub const TASK_MAJ_FLT_OFFSET: &str = "TASK_MAJ_FLT_OFFSET";
/// Global `u8`: 1 = stream each user-mode fault as a [`crate::FaultEvent`].
pub const STREAM_FAULTS: &str = "STREAM_FAULTS";
pub const RSS_MM_ID_OFFSET: &str = "RSS_MM_ID_OFFSET";
pub const RSS_CURR_OFFSET: &str = "RSS_CURR_OFFSET";
pub const RSS_MEMBER_OFFSET: &str = "RSS_MEMBER_OFFSET";
pub const RSS_SIZE_OFFSET: &str = "RSS_SIZE_OFFSET";

/// `StallKey -> StallHist`, per CPU (LRU): reclaim stalls per process and kind.
pub const STALLS: &str = "STALLS";
/// `ReclaimKind -> StallHist`, per CPU: every stall memtrace saw (of traced processes).
pub const STALLS_ALL: &str = "STALLS_ALL";
/// `u32 tgid -> KswapdWakeups`, per CPU (LRU): who asked kswapd to wake.
pub const KSWAPD_WAKEUPS: &str = "KSWAPD_WAKEUPS";
/// `SCAN_* -> ScanCounts`, per CPU: inactive-LRU pages scanned and reclaimed.
pub const LRU_SCAN: &str = "LRU_SCAN";

/// Globals `u32`: byte offsets of vmscan and oom tracepoint fields, read from tracefs at load
/// time. 0 means the field does not exist on this kernel (offset 0 is always `common_type`).
pub const DIRECT_BEGIN_ORDER_OFFSET: &str = "DIRECT_BEGIN_ORDER_OFFSET";
pub const DIRECT_BEGIN_GFP_OFFSET: &str = "DIRECT_BEGIN_GFP_OFFSET";
pub const DIRECT_END_RECLAIMED_OFFSET: &str = "DIRECT_END_RECLAIMED_OFFSET";
pub const MEMCG_BEGIN_ORDER_OFFSET: &str = "MEMCG_BEGIN_ORDER_OFFSET";
pub const MEMCG_BEGIN_GFP_OFFSET: &str = "MEMCG_BEGIN_GFP_OFFSET";
pub const MEMCG_END_RECLAIMED_OFFSET: &str = "MEMCG_END_RECLAIMED_OFFSET";
pub const KSWAPD_WAKE_NID_OFFSET: &str = "KSWAPD_WAKE_NID_OFFSET";
pub const KSWAPD_WAKE_ORDER_OFFSET: &str = "KSWAPD_WAKE_ORDER_OFFSET";
pub const KSWAPD_SLEEP_NID_OFFSET: &str = "KSWAPD_SLEEP_NID_OFFSET";
pub const SHRINK_SCANNED_OFFSET: &str = "SHRINK_SCANNED_OFFSET";
pub const SHRINK_RECLAIMED_OFFSET: &str = "SHRINK_RECLAIMED_OFFSET";
pub const OOM_PID_OFFSET: &str = "OOM_PID_OFFSET";
pub const OOM_COMM_OFFSET: &str = "OOM_COMM_OFFSET";
pub const OOM_TOTAL_VM_OFFSET: &str = "OOM_TOTAL_VM_OFFSET";
pub const OOM_ANON_RSS_OFFSET: &str = "OOM_ANON_RSS_OFFSET";
pub const OOM_FILE_RSS_OFFSET: &str = "OOM_FILE_RSS_OFFSET";
pub const OOM_SHMEM_RSS_OFFSET: &str = "OOM_SHMEM_RSS_OFFSET";
pub const OOM_UID_OFFSET: &str = "OOM_UID_OFFSET";
pub const OOM_PGTABLES_OFFSET: &str = "OOM_PGTABLES_OFFSET";
pub const OOM_SCORE_ADJ_OFFSET: &str = "OOM_SCORE_ADJ_OFFSET";
pub const REAPER_WAKE_PID_OFFSET: &str = "REAPER_WAKE_PID_OFFSET";
pub const REAPER_START_PID_OFFSET: &str = "REAPER_START_PID_OFFSET";
pub const REAPER_FINISH_PID_OFFSET: &str = "REAPER_FINISH_PID_OFFSET";
pub const REAPER_SKIP_PID_OFFSET: &str = "REAPER_SKIP_PID_OFFSET";

/// Globals `u32`: the path from a task to its memory cgroup's kernfs id, from the kernel's
/// BTF (`task_struct.cgroups`, `css_set.subsys`, `cgroup_subsys_state.cgroup`, `cgroup.kn`,
/// `kernfs_node.id`) and the memory controller's index in `css_set.subsys` (its row in
/// /proc/cgroups). [`MEMCG_SUBSYS_INDEX`] = `u32::MAX` when unknown.
pub const TASK_CGROUPS_OFFSET: &str = "TASK_CGROUPS_OFFSET";
pub const CSS_SET_SUBSYS_OFFSET: &str = "CSS_SET_SUBSYS_OFFSET";
pub const CSS_CGROUP_OFFSET: &str = "CSS_CGROUP_OFFSET";
pub const CGROUP_KN_OFFSET: &str = "CGROUP_KN_OFFSET";
pub const KERNFS_NODE_ID_OFFSET: &str = "KERNFS_NODE_ID_OFFSET";
pub const MEMCG_SUBSYS_INDEX: &str = "MEMCG_SUBSYS_INDEX";

/// Capacity of [`STALLS`]: (process, kind) pairs with stalls counted at once.
pub const MAX_STALL_PROCESSES: u32 = 8_192;
/// Capacity of [`KSWAPD_WAKEUPS`].
pub const MAX_WAKEUP_PROCESSES: u32 = 4_096;
/// Capacity of the per-thread table that pairs reclaim begin with end.
pub const MAX_PENDING_RECLAIM: u32 = 16_384;

/// Capacity of [`FAULTS`]: processes with faults counted at once.
pub const MAX_FAULT_PROCESSES: u32 = 16_384;
/// Capacity of [`RSS`]: address spaces followed at once (least recently updated go first).
pub const MAX_RSS_MMS: u32 = 16_384;

/// Slots of the per-thread table that pairs syscall entry with exit (indexed by tid modulo this).
pub const MAX_PENDING: u32 = 16_384;
/// Capacity of [`TARGETS`].
pub const MAX_TARGETS: u32 = 4_096;

/// Why a record was dropped in the kernel; the index into [`LOST`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lost {
    /// The events ring buffer was full.
    RingFull = 0,
    /// The syscall pairing table was full, so an entry could not be parked.
    PendingFull = 1,
    /// [`FAULTS`] was full: a new process's faults could not be counted.
    FaultTableFull = 2,
    /// [`TARGETS`] was full: a forked child could not be followed.
    TargetsFull = 3,
    /// The reclaim pairing table was full: a stall's begin could not be parked.
    ReclaimPendingFull = 4,
}

/// Number of [`Lost`] counters.
pub const LOST_COUNTERS: u32 = 5;
