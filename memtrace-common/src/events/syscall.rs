//! Memory system calls: `madvise`, `process_madvise`, `mmap`, `munmap`, `mremap`, `brk`, each
//! paired entry to exit per thread so one record carries arguments and result.

use super::{EventKind, Record};
use crate::pod;

/// Number of raw syscall arguments a [`SyscallEvent`] carries (the syscall ABI maximum).
pub const SYSCALL_ARGS: usize = 6;

/// One completed system call: its arguments as seen at entry and its result as seen at exit.
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

impl Record for SyscallEvent {
    const KINDS: &'static [EventKind] = &[
        EventKind::Madvise,
        EventKind::ProcessMadvise,
        EventKind::Mmap,
        EventKind::Munmap,
        EventKind::Mremap,
        EventKind::Brk,
    ];
}

impl EventKind {
    /// How many arguments a syscall record's kind takes (the rest of a record's are 0).
    pub const fn syscall_args(self) -> usize {
        match self {
            Self::Brk => 1,
            Self::Munmap => 2,
            Self::Madvise => 3,
            Self::Mremap | Self::ProcessMadvise => 5,
            Self::Mmap => 6,
            _ => 0,
        }
    }
}

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

pod!(SyscallEvent);
