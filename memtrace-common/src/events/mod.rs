//! Records the kernel programs stream to userspace through the events ring buffer, and the
//! values of the kernel-side aggregation maps: one file per event.

pub mod exec;
pub mod exit;
pub mod fault;
pub mod kswapd;
pub mod oom;
pub mod rss;
pub mod spawn;
pub mod stall;
pub mod syscall;
pub mod totals;

named_enum! {
    /// What a ring-buffer record describes. Every record starts with this as a `u32`, so
    /// userspace can tell records apart before decoding the rest.
    pub enum EventKind {
        /// `madvise(start, len, advice)` ([`syscall::SyscallEvent`]).
        Madvise = 1 => "madvise",
        /// `process_madvise(pidfd, iovec, vlen, advice, flags)`; `ret` is the number of bytes
        /// advised.
        ProcessMadvise = 2 => "process_madvise",
        /// `mmap(addr, len, prot, flags, fd, off)`; `ret` is the address.
        Mmap = 3 => "mmap",
        /// `munmap(addr, len)`.
        Munmap = 4 => "munmap",
        /// `mremap(old_addr, old_len, new_len, flags, new_addr)`; `ret` is the new address.
        Mremap = 5 => "mremap",
        /// `brk(addr)`; `ret` is the break after the call (the old one if it failed).
        Brk = 6 => "brk",
        /// A page fault taken in user mode ([`fault::FaultEvent`]), streamed only on request.
        Fault = 7 => "fault",
        /// A traced thread exited ([`exit::ThreadExit`]).
        ThreadExit = 8 => "thread_exit",
        /// A thread finished a direct or memcg reclaim stall ([`stall::ReclaimStall`]).
        ReclaimStall = 9 => "reclaim_stall",
        /// The OOM killer chose a victim ([`oom::OomVictim`]); never filtered.
        OomKill = 10 => "oom_kill",
        /// kswapd woke or slept ([`kswapd::KswapdEvent`]).
        Kswapd = 11 => "kswapd",
        /// The OOM reaper acted on a victim ([`oom::OomReaperEvent`]); never filtered.
        OomReaper = 12 => "oom_reaper",
        /// A traced process called exec ([`exec::ExecEvent`]).
        Exec = 13 => "exec",
        /// An address space was torn down ([`rss::AddressSpaceGone`]).
        AddressSpaceGone = 14 => "address_space_gone",
        /// A task was created with a pid that may have been another process's
        /// ([`spawn::Spawn`]).
        Spawn = 15 => "spawn",
        /// A process's memory syscalls counted in the kernel, sent when it exits or its pid
        /// passes to a new process ([`totals::TotalsFlush`]).
        Totals = 16 => "totals",
        /// A new caller stack was counted (`--stacks`; [`crate::stacks::StackSeen`]).
        StackSeen = 17 => "stack_seen",
    }
}

/// A record type of the events ring buffer, and the [`EventKind`]s it carries: plain data any
/// bytes of the right length are a valid value of (zerocopy's `FromBytes`).
pub trait Record: Copy + zerocopy::FromBytes {
    /// The kinds whose records have this layout (several syscalls share one).
    const KINDS: &'static [EventKind];
}
