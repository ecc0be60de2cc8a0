//! Names and indices of the maps and globals the kernel programs define, so userspace refers to
//! them by constant rather than by string literal.

/// Ring buffer carrying [`crate::SyscallEvent`]s to userspace.
pub const EVENTS: &str = "EVENTS";
/// Per-CPU `u64` counters of data the kernel side had to drop; indexed by [`Lost`].
pub const LOST: &str = "LOST";
/// `u32 tgid -> u8` set of processes to trace when [`FILTER_BY_TGID`] is set.
pub const TARGETS: &str = "TARGETS";

/// Global `u8`: 1 = trace only tgids in [`TARGETS`]; 0 = trace every process.
pub const FILTER_BY_TGID: &str = "FILTER_BY_TGID";
/// Global `u32`: memtrace's own tgid, never traced (its own mmaps would pollute a system view).
pub const SELF_TGID: &str = "SELF_TGID";
/// Global `u64`: wake userspace once this many bytes wait in [`EVENTS`]; below that, records
/// are committed without a wakeup and userspace drains them on a timer.
pub const WAKEUP_BYTES: &str = "WAKEUP_BYTES";

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
}

/// Number of [`Lost`] counters.
pub const LOST_COUNTERS: u32 = 2;
