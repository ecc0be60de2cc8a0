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

/// Capacity of [`FAULTS`]: processes with faults counted at once.
pub const MAX_FAULT_PROCESSES: u32 = 16_384;
/// Capacity of [`RSS`]: address spaces followed at once (least recently updated go first).
pub const MAX_RSS_MMS: u32 = 16_384;

/// Capacity of the per-thread table that pairs syscall entry with exit.
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
}

/// Number of [`Lost`] counters.
pub const LOST_COUNTERS: u32 = 4;
