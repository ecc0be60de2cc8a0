//! Records streamed from the kernel through the events ring buffer.

/// What a ring-buffer record describes. Every record starts with this as a `u32`, so userspace
/// can tell records apart before decoding the rest.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `madvise(start, len, advice)`.
    Madvise = 1,
    /// `process_madvise(pidfd, iovec, vlen, advice, flags)`; `ret` is the number of bytes advised.
    ProcessMadvise = 2,
    /// `mmap(addr, len, prot, flags, fd, off)`; `ret` is the address.
    Mmap = 3,
    /// `munmap(addr, len)`.
    Munmap = 4,
    /// `mremap(old_addr, old_len, new_len, flags, new_addr)`; `ret` is the new address.
    Mremap = 5,
    /// `brk(addr)`; `ret` is the break after the call (the old one if it failed).
    Brk = 6,
    /// A page fault taken in user mode ([`FaultEvent`]), streamed only on request.
    Fault = 7,
    /// A traced thread exited ([`ThreadExit`]).
    ThreadExit = 8,
    /// A thread finished a direct or memcg reclaim stall ([`crate::reclaim::ReclaimStall`]).
    ReclaimStall = 9,
    /// The OOM killer chose a victim ([`crate::reclaim::OomVictim`]); never filtered.
    OomKill = 10,
    /// kswapd woke or slept ([`crate::reclaim::KswapdEvent`]).
    Kswapd = 11,
    /// The OOM reaper acted on a victim ([`crate::reclaim::OomReaperEvent`]); never filtered.
    OomReaper = 12,
}

impl EventKind {
    pub const fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(Self::Madvise),
            2 => Some(Self::ProcessMadvise),
            3 => Some(Self::Mmap),
            4 => Some(Self::Munmap),
            5 => Some(Self::Mremap),
            6 => Some(Self::Brk),
            7 => Some(Self::Fault),
            8 => Some(Self::ThreadExit),
            9 => Some(Self::ReclaimStall),
            10 => Some(Self::OomKill),
            11 => Some(Self::Kswapd),
            12 => Some(Self::OomReaper),
            _ => None,
        }
    }
}

/// One user-mode page fault, from `exceptions/page_fault_user`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultEvent {
    /// [`EventKind::Fault`] as `u32`.
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    pub _pad: u32,
    pub ts_ns: u64,
    /// Faulting address.
    pub address: u64,
    /// User instruction pointer.
    pub ip: u64,
    /// x86 page-fault error code: bit 0 protection (page present), bit 1 write, bit 4 fetch.
    pub error_code: u64,
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for FaultEvent {}

/// Page faults one process took in user mode (`exceptions/page_fault_user`), per CPU, keyed by
/// tgid. Minor/major are not known at that point (the tracepoint fires before the fault is
/// handled); they come from the task counters (see [`ThreadExit`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// All user-mode faults.
    pub user: u64,
    /// Those caused by a write access.
    pub write: u64,
}

/// A traced thread's final fault counters (`task_struct.min_flt`/`maj_flt`, the numbers
/// /proc/PID/task/TID/stat shows), read as it exits.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadExit {
    /// [`EventKind::ThreadExit`] as `u32`.
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    /// 1 when this is the last thread of its process.
    pub group_dead: u32,
    pub min_flt: u64,
    pub maj_flt: u64,
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for ThreadExit {}

#[cfg(feature = "user")]
unsafe impl aya::Pod for FaultCounts {}

/// Number of RSS counters the kernel keeps per mm (`MM_FILEPAGES`, `MM_ANONPAGES`,
/// `MM_SWAPENTS`, `MM_SHMEMPAGES`), in that order. A power of two: the kernel programs mask
/// indices with it.
pub const RSS_MEMBERS: usize = 4;

/// RSS of one address space (mm), from `kmem/rss_stat`, keyed by the tracepoint's `mm_id`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RssState {
    /// The process owning the mm: learnt from its own updates (`curr` = 1).
    pub tgid: u32,
    pub _pad: u32,
    /// Latest size in bytes per member; -1 until first seen.
    pub size: [i64; RSS_MEMBERS],
    /// Bytes removed per member by other tasks (kswapd, another process's reclaim, the OOM
    /// reaper) while the owner did not run: memory taken away, not given back.
    pub external_drop: [u64; RSS_MEMBERS],
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for RssState {}

/// Number of raw syscall arguments carried by a [`SyscallEvent`] (the syscall ABI maximum).
pub const SYSCALL_ARGS: usize = 6;

/// One completed system call: its arguments as seen at entry and its result as seen at exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallEvent {
    /// An [`EventKind`] as `u32`.
    pub kind: u32,
    /// Process (thread group) id of the caller.
    pub tgid: u32,
    /// Thread id of the caller.
    pub tid: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_ns()` at entry and at exit (CLOCK_MONOTONIC).
    pub enter_ns: u64,
    pub exit_ns: u64,
    /// Raw arguments; how many are meaningful depends on `kind`.
    pub args: [u64; SYSCALL_ARGS],
    /// Return value: `>= 0` on success, `-errno` on failure.
    pub ret: i64,
    /// `comm` of the calling thread, NUL padded.
    pub comm: [u8; 16],
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for SyscallEvent {}

/// Syscall arguments parked between `sys_enter` and `sys_exit` of one thread.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PendingSyscall {
    pub kind: u32,
    /// The thread parked in this slot; 0 when free.
    pub tid: u32,
    pub enter_ns: u64,
    pub args: [u64; SYSCALL_ARGS],
}
