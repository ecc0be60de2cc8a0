//! Memory syscalls counted per process in the kernel, for runs that print only totals (the text
//! report, the live view, Prometheus, `--json --no-events`): no record per call crosses the
//! ring buffer. The counts follow the same rules as the per-call records' model in userspace
//! (`memtrace/src/model/attribution.rs`), so both give the same totals.
//!
//! A process's totals live in a kernel map keyed by its tgid from its first counted call until
//! it exits or its pid passes to a new process; then the programs send them to userspace in a
//! [`TotalsFlush`] record and delete the entry. Userspace also reads the map on every sample.
//! Every value is a running total since the entry was made, so a later copy replaces an
//! earlier one; [`SyscallTotals::start_ns`] says which process (of those that had the pid) a
//! copy belongs to.

use super::{EventKind, Record};
use crate::pod;

/// Advice values below this are counted in the kernel, one slot each (every advice Linux
/// defines up to `MADV_COLLAPSE`, 25). A call with a larger value (`MADV_HWPOISON` and the
/// like: rare) is sent as a record, as in a run with per-call records.
pub const COUNTED_ADVICE: usize = 32;

/// Calls with one advice value: every call, the failed ones, and the bytes the successful ones
/// covered (the length rounded up to whole pages, as the kernel does).
#[repr(C)]
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
pub struct AdviceCount {
    pub calls: u64,
    pub failed: u64,
    pub bytes: u64,
}

/// Successful calls and the bytes they covered.
#[repr(C)]
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
pub struct CallCount {
    pub calls: u64,
    pub bytes: u64,
}

named_enum! {
    /// What an `mmap` call maps, from its flags: `MAP_ANONYMOUS` makes it anonymous,
    /// `MAP_SHARED` (or `MAP_SHARED_VALIDATE`) shared.
    pub enum MmapKind {
        AnonPrivate = 0 => "anon_private",
        AnonShared = 1 => "anon_shared",
        FilePrivate = 2 => "file_private",
        FileShared = 3 => "file_shared",
    }
}

/// `MAP_ANONYMOUS`, and the mapping-type bits of mmap's flags with their shared values
/// (`include/uapi/linux/mman.h`, `asm-generic/mman-common.h`; the same on x86-64 since 2.6).
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_TYPE: u64 = 0x3;
const MAP_SHARED: u64 = 0x1;
const MAP_SHARED_VALIDATE: u64 = 0x3;

impl MmapKind {
    /// The kind of memory an mmap call with these flags maps.
    pub const fn from_flags(flags: u64) -> Self {
        let anonymous = flags & MAP_ANONYMOUS != 0;
        let sharing = flags & MAP_TYPE;
        let shared = sharing == MAP_SHARED || sharing == MAP_SHARED_VALIDATE;
        match (anonymous, shared) {
            (true, false) => Self::AnonPrivate,
            (true, true) => Self::AnonShared,
            (false, false) => Self::FilePrivate,
            (false, true) => Self::FileShared,
        }
    }
}

named_enum! {
    /// The address-space syscalls whose failures are counted apart (`SyscallTotals::failed`).
    pub enum MapSyscall {
        Mmap = 0 => "mmap",
        Munmap = 1 => "munmap",
        Mremap = 2 => "mremap",
        Brk = 3 => "brk",
    }
}

/// A length as the kernel covers it: rounded up to whole pages (saturating, as such a length
/// fails anyway). The kernel programs and userspace's per-call model both use this.
#[inline(always)]
pub const fn page_round_up(len: u64, page_size: u64) -> u64 {
    if page_size == 0 {
        return len;
    }
    // Written without a checked multiplication, which the BPF target cannot link.
    if len > u64::MAX - (page_size - 1) {
        return u64::MAX;
    }
    if page_size.is_power_of_two() {
        // Every page size Linux has: a mask, where a division costs the programs ~20 ns.
        return (len + (page_size - 1)) & !(page_size - 1);
    }
    len.div_ceil(page_size) * page_size
}

/// One process's memory syscalls, counted in the kernel since its entry was made.
#[repr(C)]
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
pub struct SyscallTotals {
    /// When the process started: its leader's `start_boottime` (ns of CLOCK_BOOTTIME; /proc's
    /// `starttime` in clock ticks). With the tgid, which process these totals belong to; 0 when
    /// unknown here (no BTF), or not yet filled in (an entry userspace made, see `last_brk`).
    pub start_ns: u64,
    /// The process's memory cgroup ([`crate::cgroup`]), read when the entry was made or filled
    /// in, and again when it is flushed at exit; 0 when unknown.
    pub cgroup_id: u64,
    /// The program break after the last successful `brk` call; 0 while unknown: at first, and
    /// again after exec, whose new program has a new break. A call while it is unknown counts
    /// in `brk_unknown`. Userspace makes the entry of a process whose break it read from /proc
    /// (a named target), with this set.
    pub last_brk: u64,
    /// `madvise` by advice value (below [`COUNTED_ADVICE`]).
    pub madvise: [AdviceCount; COUNTED_ADVICE],
    /// Successful `mmap` calls by [`MmapKind`].
    pub mmap: [CallCount; MmapKind::COUNT],
    pub munmap: CallCount,
    pub mremap_grow: CallCount,
    pub mremap_shrink: CallCount,
    /// Successful `brk` calls that moved the break up or down (a query, `brk(0)`, is neither).
    pub brk_grow: CallCount,
    pub brk_shrink: CallCount,
    /// Successful `brk` calls made while the break before them was unknown.
    pub brk_unknown: u64,
    /// Failed calls by [`MapSyscall`] (a `brk` fails when the break did not move where asked).
    pub failed: [u64; MapSyscall::COUNT],
}

named_enum! {
    /// Why the kernel sent a process's totals.
    pub enum FlushReason {
        /// Its last thread exited.
        Exit = 0 => "exit",
        /// Its pid was given to a new task (its exit was not seen: before any exit detection).
        PidReused = 1 => "pid_reused",
        /// It exec'd: a copy of its counts so far, its entry kept (where a process's counts
        /// end when its cgroup changes with its program, as a container's first one does).
        Exec = 2 => "exec",
    }
}

/// A process's final [`SyscallTotals`], sent when it exits or its pid passes to a new process.
/// In the ring it comes before the [`super::spawn::Spawn`] that gives the pid to the next
/// process.
#[repr(C)]
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
pub struct TotalsFlush {
    /// [`EventKind::Totals`] as `u32`.
    pub kind: u32,
    pub tgid: u32,
    /// A [`FlushReason`] as `u32`.
    pub reason: u32,
    pub _pad: u32,
    pub totals: SyscallTotals,
}

impl Record for TotalsFlush {
    const KINDS: &'static [EventKind] = &[EventKind::Totals];
}

pod!(AdviceCount, CallCount, SyscallTotals, TotalsFlush);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmap_kinds_from_flags() {
        // MAP_PRIVATE | MAP_ANONYMOUS, MAP_SHARED | MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED,
        // MAP_SHARED_VALIDATE.
        assert_eq!(MmapKind::from_flags(0x22), MmapKind::AnonPrivate);
        assert_eq!(MmapKind::from_flags(0x21), MmapKind::AnonShared);
        assert_eq!(MmapKind::from_flags(0x02), MmapKind::FilePrivate);
        assert_eq!(MmapKind::from_flags(0x01), MmapKind::FileShared);
        assert_eq!(MmapKind::from_flags(0x03), MmapKind::FileShared);
    }

    #[test]
    fn lengths_round_up_to_pages() {
        assert_eq!(page_round_up(1, 4096), 4096);
        assert_eq!(page_round_up(4096, 4096), 4096);
        assert_eq!(page_round_up(0, 4096), 0);
        assert_eq!(page_round_up(u64::MAX, 4096), u64::MAX);
        assert_eq!(page_round_up(u64::MAX - 4095, 4096), u64::MAX - 4095);
        // Not a power of two: the same rule, by division.
        assert_eq!(page_round_up(5, 3), 6);
    }

    #[test]
    fn every_counted_advice_slot_has_room_for_linux_advice() {
        assert!(crate::advice::COLLAPSE < COUNTED_ADVICE as u32);
        assert!(
            COUNTED_ADVICE.is_power_of_two(),
            "the programs mask with it"
        );
    }
}
