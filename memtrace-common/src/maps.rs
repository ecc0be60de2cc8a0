//! The maps userspace reads, by the names the kernel programs give them (a unit test in
//! `memtrace` checks each name against the object file), and their capacities.

/// Ring buffer carrying records to userspace; resized at load time (`--ring-size`).
pub const EVENTS: &str = "EVENTS";
/// Per-CPU `u64` counters of what the kernel side dropped, indexed by [`crate::lost::Lost`].
pub const LOST: &str = "LOST";
/// `u64` words, a bitmap of the tgids to trace when [`crate::config::Config::filter_by_tgid`]
/// is set: bit `pid % 64` of word `pid / 64`, sized by [`target_words`].
pub const TARGETS: &str = "TARGETS";
/// `u32 tgid -> FaultCounts`, per CPU.
pub const FAULTS: &str = "FAULTS";
/// `u32 mm_id -> RssState` (LRU).
pub const RSS: &str = "RSS";
/// `StallKey -> StallHist`, per CPU (LRU): reclaim stalls per process and kind.
pub const STALLS: &str = "STALLS";
/// `ReclaimKind -> StallHist`, per CPU: every stall of traced processes.
pub const STALLS_ALL: &str = "STALLS_ALL";
/// `u32 tgid -> KswapdWakeups`, per CPU (LRU): who asked kswapd to wake.
pub const KSWAPD_WAKEUPS: &str = "KSWAPD_WAKEUPS";
/// `ScanSlot -> ScanCounts`, per CPU: inactive-LRU pages scanned and reclaimed.
pub const LRU_SCAN: &str = "LRU_SCAN";
/// `u32 tgid -> SyscallTotals`: memory syscalls counted per process in the kernel
/// (`Config::count_syscalls`); resized at load time ([`totals_capacity`]).
pub const TOTALS: &str = "TOTALS";

/// Every map userspace takes from the loaded object.
pub const ALL: [&str; 10] = [
    EVENTS,
    LOST,
    TARGETS,
    FAULTS,
    RSS,
    STALLS,
    STALLS_ALL,
    KSWAPD_WAKEUPS,
    LRU_SCAN,
    TOTALS,
];

/// Words of [`TARGETS`] covering pids below `pid_max`; one when nothing is filtered.
pub const fn target_words(filtering: bool, pid_max: u32) -> u32 {
    if filtering { pid_max.div_ceil(64) } else { 1 }
}
/// Slots of the per-thread table that pairs syscall entry with exit (indexed by tid modulo
/// this).
pub const MAX_PENDING: u32 = 16_384;
/// Capacity of [`FAULTS`]: processes with faults counted at once.
pub const MAX_FAULT_PROCESSES: u32 = 16_384;
/// Capacity of [`RSS`]: address spaces followed at once (least recently updated go first).
pub const MAX_RSS_MMS: u32 = 16_384;
/// Capacity of [`STALLS`]: (process, kind) pairs with stalls counted at once.
pub const MAX_STALL_PROCESSES: u32 = 8_192;
/// Capacity of [`KSWAPD_WAKEUPS`].
pub const MAX_WAKEUP_PROCESSES: u32 = 4_096;
/// Capacity of [`TOTALS`] when counting for every process or following children: processes
/// with calls counted and not yet exited (~1 KiB each, preallocated). A process that finds it
/// full has its calls sent as records instead, so nothing is lost.
pub const MAX_TOTALS_PROCESSES: u32 = 8_192;

/// Capacity of [`TOTALS`] for a run: every process, or only the named ones.
pub const fn totals_capacity(counting: bool, targets: Option<u32>, follow: bool) -> u32 {
    match (counting, targets) {
        (false, _) => 1,
        (true, Some(targets)) if !follow => targets,
        (true, _) => MAX_TOTALS_PROCESSES,
    }
}
/// Capacity of the per-thread table that pairs reclaim begin with end.
pub const MAX_PENDING_RECLAIM: u32 = 16_384;
