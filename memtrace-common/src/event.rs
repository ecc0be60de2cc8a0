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
}

impl EventKind {
    pub const fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(Self::Madvise),
            2 => Some(Self::ProcessMadvise),
            _ => None,
        }
    }
}

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
    pub _pad: u32,
    pub enter_ns: u64,
    pub args: [u64; SYSCALL_ARGS],
}
